"""The registry of generators: name -> :class:`ModelSpec`, plus building a model by name (from a weights file).

Every entry declares its family's own sampling rules (``ModelSpec.sampler_defaults``, ``guidance_*``), the one
source recipes and ``sample --model`` start from (:mod:`mixflow_bench.recipes.families` reads them):

* ``sit`` (SiT, ``DATA_AT_1`` time): SDE Euler-Maruyama 250 NFE with a 0.04 drift-only last step; CFG on the
  first 3 of 4 latent channels (DiT legacy); uniform labels; uint8 by ``clamp(127.5 x + 128)`` (rounds); TF32.
  Its Heun is torchdiffeq's ``heun2`` on SiT's uniform ODE grid.
* ``repa`` (REPA, ``DATA_AT_0`` time): the same SDE; CFG on all 4 channels, only inside the guidance interval
  ``0 <= t <= 0.7``; uint8 by ``(x + 1) / 2 * 255`` (truncates). Its Heun is REPA's ``euler_sampler(heun=True)``.
* ``rae`` (RAE DiT^DH, ``DATA_AT_0`` time): Euler on the shifted 50-point grid; autoguidance by the small
  DiT^DH-S of the same resolution (the guide itself, if asked to guide, uses CFG); 50 labels per class;
  uint8 by ``clamp(0, 1) * 255`` (truncates). Its Heun is torchdiffeq's ``heun2`` on the same shifted grid.
* ``gmflow`` (GM-DiT, ``DATA_AT_0``, outputs a Gaussian mixture): GM-ODE 2nd order, 32 NFE x 4 sub-steps,
  probabilistic guidance 0.45.
* ``mixed-source`` (κ-FC SongUNets, ``DATA_AT_1``, unconditional): Euler 128 steps, no guidance.
* ``toy`` (the velocity MLP of the CPU studies, 8x8 digits by default): Euler 50 steps.
"""

from __future__ import annotations

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

_SDE = {"sampler": "sde", "steps": 250, "last_step_size": 0.04, "labels": "uniform", "precision": "tf32"}
SIT_RULES = {"family": "sit", "sampler_defaults": {**_SDE, "quantize": "round"}, "guidance_scale": 1.5,
             "guidance_rules": {"channels": 3}}  # fmt: skip
REPA_RULES = {"family": "repa", "sampler_defaults": {**_SDE, "quantize": "truncate"}, "guidance_scale": 1.8,
              "guidance_rules": {"interval": [0.0, 0.7]}}  # fmt: skip
RAE_SAMPLE = {"sampler": "rae-euler", "steps": 50, "time_shift": "auto", "labels": "equal", "quantize": "truncate",
              "precision": "tf32"}  # fmt: skip
RAE_AUTOGUIDANCE_SCALE = {256: 1.42, 512: 1.5}  # the headline scale of the released DiT^DH-XL, by resolution


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
                **SIT_RULES,
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
        **SIT_RULES,
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
        **REPA_RULES,
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
                family="rae",
                sampler_defaults=dict(RAE_SAMPLE),
                # the XL model is guided by the small DiT^DH-S of its resolution; the guide itself uses CFG
                **({"guidance_kind": "autoguidance", "guidance_scale": RAE_AUTOGUIDANCE_SCALE[res],
                    "guidance_rules": {"guide_model": f"rae-dith-s-{res}"}} if size == "xl" else {}),  # fmt: skip
            )
    return zoo


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
    family="gmflow",
    method="gmflow",
    output="gm",
    guidance_kind="probabilistic",
    guidance_scale=0.45,
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
            family="mixed-source",
            method="mixed-source",
            guidance_kind=None,  # unconditional
        )
    return out


ZOO.update(_mixed_source_specs())


def _toy_mlp(**overrides) -> nn.Module:
    from mixflow_bench.models.toy_mlp import ToyVelocityMLP

    return ToyVelocityMLP(**{"data_shape": (8, 8), "num_classes": 10, **overrides})


# the CPU studies' velocity MLP, 8x8 digits with 10 classes by default (mixflow_bench.sampling.models.toy_spec
# sets another data shape, class count or convention from a recipe's model overrides)
ZOO["toy-mlp"] = ModelSpec(
    name="toy-mlp",
    build=_toy_mlp,
    convention=TimeConvention.DATA_AT_1,
    latent_shape=(8, 8),
    num_classes=10,
    sampler_defaults={"sampler": "euler", "steps": 50},
    description="toy velocity MLP (pixel space)",
    family="toy",
)


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
