"""Model names -> (spec, module) from the zoo; toy models (``toy-mlp``) take a recipe's model overrides."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mixflow_bench.errors import UserError
from mixflow_bench.flow.conventions import TimeConvention
from mixflow_bench.models.base import ModelSpec
from mixflow_bench.models.zoo import ZOO
from mixflow_bench.models.zoo import get_spec as zoo_spec

TOY_MODELS = tuple(name for name, spec in ZOO.items() if spec.family == "toy")


def toy_spec(name: str = "toy-mlp", **overrides: Any) -> ModelSpec:
    """The toy MLP's zoo spec with a recipe's model ``overrides`` (``data_shape``, ``num_classes``, ``convention``,
    and the architecture's own keywords); its sampling rules are the zoo entry's."""
    base = zoo_spec(name)
    data_shape = tuple(overrides.get("data_shape", base.latent_shape))
    num_classes = int(overrides.get("num_classes", base.num_classes))
    convention = TimeConvention(overrides.get("convention", base.convention))
    kwargs = {**overrides, "data_shape": data_shape, "num_classes": num_classes, "convention": convention}
    return dataclasses.replace(
        base,
        build=lambda **extra: base.build(**{**kwargs, **extra}),
        convention=convention,
        latent_shape=data_shape,
        num_classes=num_classes,
    )


def get_spec(name: str, **overrides: Any) -> ModelSpec:
    if name in TOY_MODELS:
        return toy_spec(name, **overrides)
    return zoo_spec(name)


WEIGHT_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".safetensors")


def check_checkpoint(source: str | Path) -> None:
    """A ``--checkpoint`` that names a file (a weights suffix or a folder in it) which does not exist is a
    :class:`~mixflow_bench.errors.UserError` saying so; other names are artifact names, checked on fetching."""
    path = Path(source)
    if not path.exists() and (path.suffix in WEIGHT_SUFFIXES or len(path.parts) > 1):
        raise UserError(f"checkpoint {source}: no such file (nor an artifact name; see mixflow-bench download --list)")


def load_state_dict(source: str | Path) -> dict[str, Any]:
    """A raw state dict from a file (or a hub artifact name); unwraps ``{"ema": ...}`` checkpoints."""
    check_checkpoint(source)
    path = Path(source)
    if path.exists():
        from mixflow_bench.analysis.toy_checkpoints import read_checkpoint

        state = read_checkpoint(path)
    else:
        from mixflow_bench.hub import load_state_dict as hub_load

        state = hub_load(str(source))
    if isinstance(state, dict) and "ema" in state and isinstance(state["ema"], dict):
        state = state["ema"]
    return state


def resolve_model(
    name: str,
    checkpoint: str | Path | None = None,
    *,
    random_init: bool = False,
    overrides: dict[str, Any] | None = None,
) -> tuple[ModelSpec, nn.Module]:
    """Build model ``name`` with weights from ``checkpoint`` (path or artifact), the zoo default, or random.

    ``random_init`` skips every download (for smoke tests of shapes and plumbing).
    """
    overrides = dict(overrides or {})
    if name in TOY_MODELS:
        spec = toy_spec(name, **overrides)
        model = spec.build()
        if checkpoint is not None and not random_init:
            model.load_state_dict(load_state_dict(checkpoint), strict=True)
        return spec, model
    from mixflow_bench.models import zoo

    spec = zoo.get_spec(name)
    if random_init:
        return spec, zoo.build_model(name, **overrides)
    if checkpoint is None:
        if spec.checkpoint is None:
            raise ValueError(f"model {name!r} has no released checkpoint; give a checkpoint (file or artifact)")
        checkpoint = spec.checkpoint
    check_checkpoint(checkpoint)
    weights = Path(checkpoint)
    if not weights.exists():  # an artifact name; fetched before the (slow) build, so that a missing file fails at once
        from mixflow_bench.hub import fetch

        weights = fetch(str(checkpoint))
    return spec, zoo.build_model(name, weights_path=weights, **overrides)


def load_codec(spec: ModelSpec, *, random_init: bool = False) -> Any:
    """The latent decoder of ``spec`` (None for pixel-space models)."""
    if spec.decoder is None:
        return None
    from mixflow_bench.data.codec import build_named_codec

    return build_named_codec(spec.decoder, spec.resolution, random_init=random_init)


def default_device() -> torch.device:
    if torch.cuda.is_available():
        import os

        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")
