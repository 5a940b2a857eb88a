"""Load toy velocity models (``ToyVelocityMLP``) saved with ``torch.save`` as velocity functions for analysis.

A checkpoint is a state dict, or a dict holding one under ``state_dict`` / ``ema`` / ``model``, optionally with the
constructor arguments under ``model_kwargs``. Missing arguments are read off the state dict's shapes, except the
data shape (given by the caller) and the time convention (``DATA_AT_1`` unless stated).
"""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mixflow_bench.errors import UserError
from mixflow_bench.flow.conventions import TimeConvention
from mixflow_bench.models.toy_mlp import ToyVelocityMLP

VelocityFn = Callable[[Tensor, Tensor], Tensor]


class CheckpointError(UserError, ValueError):
    """A toy checkpoint that cannot be loaded; the message names the file."""


def read_checkpoint(path: Path | str, *, weights_only: bool = True) -> Any:
    """``torch.load`` of a local checkpoint (CPU); a missing, truncated or foreign file is a one-line
    :class:`CheckpointError` naming it."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        return torch.load(path, map_location="cpu", weights_only=weights_only)
    except (EOFError, RuntimeError, pickle.UnpicklingError, zipfile.BadZipFile) as exc:
        why = " ".join(str(exc).split()) or type(exc).__name__
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({why})") from exc


def _state_dict(obj: Any, path: Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a dict (state dict or checkpoint), got {type(obj).__name__}")
    kwargs = dict(obj.get("model_kwargs") or {})
    for key in ("state_dict", "ema", "model"):
        if isinstance(obj.get(key), dict):
            return obj[key], kwargs
    return {k: v for k, v in obj.items() if isinstance(v, Tensor)}, kwargs


def infer_kwargs(state: dict[str, Tensor], data_shape: tuple[int, ...] | None) -> dict[str, Any]:
    """Constructor arguments of ``ToyVelocityMLP`` implied by a state dict's shapes (and ``data_shape``)."""
    kwargs: dict[str, Any] = {
        "num_classes": state["label_embed.weight"].shape[0] - 1,
        "hidden": state["input.weight"].shape[0],
        "time_dim": state["time_mlp.0.weight"].shape[1],
        "depth": len({k.split(".")[1] for k in state if k.startswith("blocks.")}),
    }
    if data_shape is not None:
        kwargs["data_shape"] = tuple(data_shape)
    return kwargs


def load_toy_model(path: Path | str, data_shape: tuple[int, ...] | None = None) -> ToyVelocityMLP:
    """A ``ToyVelocityMLP`` loaded with ``strict=True`` from ``path`` (eval mode, CPU)."""
    path = Path(path)
    obj = read_checkpoint(path, weights_only=False)
    state, kwargs = _state_dict(obj, path)
    try:
        kwargs = {**infer_kwargs(state, data_shape), **kwargs}
    except KeyError as exc:
        raise CheckpointError(f"{path}: not a ToyVelocityMLP state dict (missing {exc})") from exc
    if "data_shape" not in kwargs:
        raise CheckpointError(f"{path}: no model_kwargs.data_shape in the checkpoint; pass --data-shape")
    kwargs["data_shape"] = tuple(kwargs["data_shape"])
    if "convention" in kwargs:
        kwargs["convention"] = TimeConvention(kwargs["convention"])
    model = ToyVelocityMLP(**kwargs)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: state dict does not match ToyVelocityMLP({kwargs}): {exc}") from exc
    return model.eval()


def model_velocity(model: ToyVelocityMLP, labels: Tensor) -> VelocityFn:
    """``(x, t) -> dx/dt`` in the model's convention for fixed class ``labels`` (N,); float64 states are cast."""

    @torch.no_grad()
    def velocity(x: Tensor, t: Tensor) -> Tensor:
        return model(x.float(), t.float(), labels[: len(x)]).to(x.dtype)

    return velocity
