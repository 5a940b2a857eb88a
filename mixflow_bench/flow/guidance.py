"""Guidance: build a velocity function ``(x, t) -> v`` from class-conditional models and labels.

* classifier-free guidance: ``u + w (c - u)`` with the conditional and null-label halves in one batch; optionally
  on the first ``k`` channels only (SiT/DiT guide 3 of 4 latent channels, the rest stays conditional), and
  optionally only inside a time interval ``lo <= t <= hi`` in the model's own convention (REPA: t <= 0.7 in
  ``DATA_AT_0`` time), outside of which only the conditional half is evaluated; the interval is tested at the
  time the sampler names for it (``t.guidance_time``: the evaluation's own time, except in REPA's Heun);
* autoguidance: ``g + w (m - g)`` with a smaller guide model ``g`` called with the *same* label (RAE), without
  the null-label half that the official sampler computes and discards.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

VelocityFn = Callable[[Tensor, Tensor], Tensor]
ModelFn = Callable[[Tensor, Tensor, Tensor], Tensor] | nn.Module


def conditional(model: ModelFn, y: Tensor) -> VelocityFn:
    """The unguided class-conditional velocity."""
    return lambda x, t: model(x, t, y)


def _mix(cond: Tensor, other: Tensor, scale: float, channels: int | None) -> Tensor:
    guided = other + scale * (cond - other)
    if channels is None or channels >= cond.shape[1]:
        return guided
    return torch.cat([guided[:, :channels], cond[:, channels:]], dim=1)


def _inside(t: Tensor, interval: tuple[float, float] | None) -> bool:
    if interval is None:
        return True
    value = getattr(t, "guidance_time", getattr(t, "host_value", None))  # set by the samplers: no host sync
    if value is None:
        value = float(t.reshape(-1)[0])  # all samples of a batch share a time on the sampler's grid
    return interval[0] <= value <= interval[1]


def classifier_free(
    model: ModelFn,
    y: Tensor,
    scale: float,
    *,
    null_label: int = 1000,
    channels: int | None = None,
    interval: tuple[float, float] | None = None,
) -> VelocityFn:
    """Classifier-free guidance of ``model`` for labels ``y``; ``scale = 1`` is the conditional model."""
    if scale == 1.0:
        return conditional(model, y)
    y_null = torch.full_like(y, null_label)

    def velocity(x: Tensor, t: Tensor) -> Tensor:
        if not _inside(t, interval):
            return model(x, t, y)
        out = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, y_null]))
        cond, uncond = out.chunk(2)
        return _mix(cond, uncond, scale, channels)

    return velocity


def autoguidance(
    model: ModelFn,
    guide: ModelFn,
    y: Tensor,
    scale: float,
    *,
    interval: tuple[float, float] | None = None,
) -> VelocityFn:
    """Autoguidance: the main model extrapolated away from a weaker guide model on the same label."""

    def velocity(x: Tensor, t: Tensor) -> Tensor:
        main = model(x, t, y)
        if not _inside(t, interval):
            return main
        return _mix(main, guide(x, t, y), scale, None)

    return velocity
