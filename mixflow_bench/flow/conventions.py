"""Time conventions of flow-matching codebases.

Two conventions are in use by the baselines this project reproduces:

* ``DATA_AT_1`` (SiT and the MixFlow paper): ``x_t = alpha(t) * data + sigma(t) * noise`` with t=0 noise and
  t=1 data; for the linear path the velocity is ``data - noise``.
* ``DATA_AT_0`` (REPA and RAE): t=0 data and t=1 noise; the linear path's velocity is ``noise - data``.

Inside the library every formula is written in *data-ward* time ``tau`` (``DATA_AT_1``); a model's own time
``t`` is converted at its boundary. Converting time also flips the sign of the velocity, because the velocity is
always ``dx/dt`` in the convention it is written in.
"""

from __future__ import annotations

import enum

import torch
from torch import Tensor


class TimeConvention(str, enum.Enum):
    """Which end of the time axis is data."""

    DATA_AT_1 = "data_at_1"  # SiT, MixFlow paper: t=0 noise, t=1 data
    DATA_AT_0 = "data_at_0"  # REPA, RAE: t=0 data, t=1 noise

    @property
    def noise_time(self) -> float:
        """The time at which samples are pure noise (where sampling starts)."""
        return 0.0 if self is TimeConvention.DATA_AT_1 else 1.0

    @property
    def data_time(self) -> float:
        """The time at which samples are data (where sampling ends)."""
        return 1.0 if self is TimeConvention.DATA_AT_1 else 0.0

    def to_data_ward(self, t: Tensor | float) -> Tensor | float:
        """Time ``t`` of this convention -> data-ward time ``tau`` (tau=1 is data)."""
        return t if self is TimeConvention.DATA_AT_1 else 1.0 - t

    def from_data_ward(self, tau: Tensor | float) -> Tensor | float:
        """Data-ward time ``tau`` (tau=1 is data) -> time of this convention."""
        return tau if self is TimeConvention.DATA_AT_1 else 1.0 - tau

    @property
    def velocity_sign(self) -> float:
        """+1 where the velocity points toward data as t grows (DATA_AT_1), -1 otherwise."""
        return 1.0 if self is TimeConvention.DATA_AT_1 else -1.0


def convert_time(t: Tensor | float, source: TimeConvention, target: TimeConvention) -> Tensor | float:
    """Express a time of convention ``source`` in convention ``target``."""
    return target.from_data_ward(source.to_data_ward(t))


def convert_velocity(v: Tensor, source: TimeConvention, target: TimeConvention) -> Tensor:
    """Express a velocity ``dx/dt`` of convention ``source`` as ``dx/dt`` of convention ``target``."""
    return v if source is target else -v


def rae_shift_factor(channels: int, height: int, width: int, base: int = 4096) -> float:
    """RAE's dimension-dependent time-shift factor ``s = sqrt(C*H*W / base)`` (sqrt(48) for 768x16x16)."""
    return float((channels * height * width / base) ** 0.5)


def shift_noise_level(noise_level: Tensor, shift: float) -> Tensor:
    """RAE's time shift on a noise-ward time (``DATA_AT_0``; 1 is noise): ``s*t / (1 + (s-1)*t)``.

    ``shift > 1`` moves every time toward noise; ``shift = 1`` is the identity.
    """
    return shift * noise_level / (1.0 + (shift - 1.0) * noise_level)


def as_time_batch(t: Tensor | float, batch: int, like: Tensor) -> Tensor:
    """A (batch,) tensor of times on ``like``'s device, in float32 unless ``like`` is float64."""
    dtype = torch.float64 if like.dtype == torch.float64 else torch.float32
    if isinstance(t, Tensor):
        t = t.to(device=like.device, dtype=dtype)
        return t.expand(batch).clone() if t.ndim == 0 else t
    return torch.full((batch,), float(t), device=like.device, dtype=dtype)


def resolve_shift(shift: float | str | None, latent_shape: tuple[int, ...]) -> float:
    """A recipe's ``time_shift``: ``"auto"`` is RAE's ``sqrt(C*H*W/4096)``; None is no shift (1)."""
    if shift is None:
        return 1.0
    if shift == "auto":
        if len(latent_shape) != 3:
            raise ValueError(f"time_shift 'auto' needs a (C, H, W) latent shape, got {latent_shape}")
        return rae_shift_factor(*latent_shape)
    return float(shift)
