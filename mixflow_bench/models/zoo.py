"""The registry of generators: name -> :class:`ModelSpec`, plus building a model by name (from a weights file)."""

from __future__ import annotations

import dataclasses
from functools import partial
from pathlib import Path

import torch
from torch import nn

from mixflow_bench.errors import UnknownNameError
from mixflow_bench.flow.conventions import TimeConvention
from mixflow_bench.models.base import ModelSpec
from mixflow_bench.models.rae_dit import dit_dh
from mixflow_bench.models.repa import repa_sit
from mixflow_bench.models.sit import SIT_SIZES, sit
from mixflow_bench.recipes.families import family_of, sample_defaults


def _registry() -> dict[str, ModelSpec]:
    zoo: dict[str, ModelSpec] = {}
    for size in SIT_SIZES:
        for patch in (2, 4, 8):
            name = f"sit-{size.lower()}-{patch}"
            released = name == "sit-xl-2"
            zoo[name] = ModelSpec(
                name=name,
                build=partial(sit, size, patch, 32),
                convention=TimeConvention.DATA_AT_1,
                latent_shape=(4, 32, 32),
                num_classes=1000,
                checkpoint="sit-xl-2-256" if released else None,
                decoder="sd-vae-ft-ema",
                resolution=256,
                description=f"SiT-{size}/{patch} on SD-VAE latents, 256 px"
                + (" (official EMA weights, learn_sigma)" if released else ""),
            )
    zoo["sit-xl-2-512"] = ModelSpec(
        name="sit-xl-2-512",
        build=partial(sit, "XL", 2, 64, learn_sigma=False),
        convention=TimeConvention.DATA_AT_1,
        latent_shape=(4, 64, 64),
        num_classes=1000,
        checkpoint=None,
        decoder="sd-vae-ft-ema",
        resolution=512,
        description="SiT-XL/2 on SD-VAE latents, 512 px (no official weights released)",
    )
    zoo["repa-sit-xl-2"] = ModelSpec(
        name="repa-sit-xl-2",
        build=partial(repa_sit, "XL", 2, 32),
        convention=TimeConvention.DATA_AT_0,
        latent_shape=(4, 32, 32),
        num_classes=1000,
        checkpoint="repa-sit-xl-2-256",
        decoder="sd-vae-ft-ema",
        resolution=256,
        description="SiT-XL/2 + REPA (4M iterations), 256 px",
    )
    for size in ("xl", "s"):
        for res in (256, 512):
            name = f"rae-dith-{size}-{res}"
            grid = res // 16
            zoo[name] = ModelSpec(
                name=name,
                build=partial(dit_dh, size.upper(), grid),
                convention=TimeConvention.DATA_AT_0,
                latent_shape=(768, grid, grid),
                num_classes=1000,
                checkpoint=name,
                decoder="rae-dinov2-b",
                resolution=res,
                description=f"RAE DiT^DH-{size.upper()} on DINOv2-B latents, {res} px"
                + (" (autoguidance guide)" if size == "s" else ""),
            )
    # the family's sampling rules (mixflow_bench.recipes.families: the one source recipes and the CLI share)
    return {
        name: dataclasses.replace(spec, family=family_of(name), sampler_defaults=sample_defaults(name))
        for name, spec in zoo.items()
    }


ZOO: dict[str, ModelSpec] = _registry()

# --- GMFlow: GM-DiT (the network predicts a Gaussian mixture; see mixflow_bench.flow.gmflow) -------------------
from mixflow_bench.models.gmdit import gmdit_xl2  # noqa: E402

ZOO["gmflow-dit-xl-2"] = ModelSpec(
    name="gmflow-dit-xl-2",
    build=gmdit_xl2,
    convention=TimeConvention.DATA_AT_0,
    latent_shape=(4, 32, 32),
    num_classes=1000,
    checkpoint="gmflow-dit",
    decoder="sd-vae-ft-ema",
    resolution=256,
    sampler_defaults={
        "sampler": "gm-ode2",
        "steps": 32,
        "substeps": 4,
        "guidance": {"kind": "probabilistic", "scale": 0.45},
    },
    description="GMFlow GM-DiT-XL/2, K = 8 (official EMA weights, Diffusers bf16), 256 px; outputs a GM",
)


def _mixed_source_specs() -> dict[str, ModelSpec]:
    """The released κ-FC mixed-source velocity networks (EDM SongUNet, DDPM++), pixel space, unconditional."""
    from mixflow_bench.models.songunet import AFHQV2_64, CIFAR10, FFHQ64, load_released_checkpoint, songunet

    out = {}
    for name, config, data in (("cifar10", CIFAR10, "CIFAR-10"), ("ffhq-64", FFHQ64, "FFHQ"),
                               ("afhqv2-64", AFHQV2_64, "AFHQv2")):
        res = config.resolution
        out[f"mixed-source-{name}"] = ModelSpec(
            name=f"mixed-source-{name}",
            build=partial(songunet, config),
            convention=TimeConvention.DATA_AT_1,
            latent_shape=(3, res, res),
            num_classes=0,
            checkpoint=f"mixed-source-{name}",
            decoder=None,
            resolution=res,
            sampler_defaults={"sampler": "euler", "steps": 128},
            description=f"κ-FC mixed-source SongUNet (DDPM++) on {data} {res}x{res} pixels (released EMA weights)",
            load_weights=load_released_checkpoint,
        )
    return out


ZOO.update(_mixed_source_specs())


def list_models() -> list[str]:
    """Names of every model in the zoo."""
    return list(ZOO)


def get_spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` registered as ``name``."""
    try:
        return ZOO[name]
    except KeyError:
        raise UnknownNameError("model", name, ZOO) from None


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a checkpoint (``torch.load(weights_only=True)``), unwrapping an ``"ema"`` entry if present."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("ema"), dict):
        state = state["ema"]
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict, got {type(state).__name__}")
    return state


def build_model(name: str, *, weights_path: str | Path | None = None, **overrides) -> nn.Module:
    """Build model ``name``; with ``weights_path`` load its weights with ``strict=True``.

    ``overrides`` are passed to the architecture (e.g. ``attention="math"``). The released weights of a spec's
    ``checkpoint`` artifact come through :func:`mixflow_bench.sampling.models.resolve_model`, which fetches them.
    """
    spec = get_spec(name)
    if weights_path is None:
        return spec.build(**overrides)
    if not Path(weights_path).exists():  # before the (slow) build, so that a missing file fails at once
        raise FileNotFoundError(f"checkpoint {weights_path} does not exist")
    model = spec.build(**overrides)
    if spec.load_weights is not None:
        spec.load_weights(model, weights_path)
        return model
    state = load_state_dict_file(weights_path)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise RuntimeError(f"checkpoint {weights_path} does not fit model {name!r}: {err}") from err
    return model
