"""Interpolation paths ``x = alpha * data + sigma * noise`` in an explicit time convention.

The coefficients are written once in data-ward time ``tau`` (tau = 1 is data):

* linear: ``alpha(tau) = tau``, ``sigma(tau) = 1 - tau`` (SiT ``ICPlan``; RAE/REPA after ``t = 1 - tau``)
* GVP:    ``alpha(tau) = sin(pi tau / 2)``, ``sigma(tau) = cos(pi tau / 2)`` (SiT ``GVPCPlan``)

A :class:`Path` carries its :class:`TimeConvention`; all its methods take and return times and derivatives of
*that* convention, so ``d_alpha`` is ``d alpha / dt`` with ``t`` the convention's own time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from mixflow_bench.flow.conventions import TimeConvention


def _bcast(t: Tensor, x: Tensor) -> Tensor:
    """Reshape a (B,) time to broadcast against x of shape (B, ...)."""
    t = torch.as_tensor(t, device=x.device, dtype=x.dtype)
    return t.reshape(-1, *([1] * (x.ndim - 1))) if t.ndim == 1 else t


@dataclass(frozen=True)
class Path:
    """An interpolation path with coefficients of kind ``"linear"`` or ``"gvp"`` in ``convention``."""

    kind: str = "linear"
    convention: TimeConvention = TimeConvention.DATA_AT_1

    def __post_init__(self) -> None:
        if self.kind not in ("linear", "gvp"):
            raise ValueError(f"unknown path kind {self.kind!r} (expected 'linear' or 'gvp')")

    # --- coefficients in data-ward time tau (tau = 1 is data) -------------------------------------------
    def _alpha_tau(self, tau: Tensor) -> Tensor:
        return tau if self.kind == "linear" else torch.sin(0.5 * math.pi * tau)

    def _sigma_tau(self, tau: Tensor) -> Tensor:
        return 1.0 - tau if self.kind == "linear" else torch.cos(0.5 * math.pi * tau)

    def _d_alpha_tau(self, tau: Tensor) -> Tensor:
        if self.kind == "linear":
            return torch.ones_like(tau)
        return 0.5 * math.pi * torch.cos(0.5 * math.pi * tau)

    def _d_sigma_tau(self, tau: Tensor) -> Tensor:
        if self.kind == "linear":
            return -torch.ones_like(tau)
        return -0.5 * math.pi * torch.sin(0.5 * math.pi * tau)

    # --- the same in this path's convention -------------------------------------------------------------
    def alpha(self, t: Tensor) -> Tensor:
        """Data coefficient at time ``t`` (this path's convention)."""
        return self._alpha_tau(self.convention.to_data_ward(t))

    def sigma(self, t: Tensor) -> Tensor:
        """Noise coefficient at time ``t`` (this path's convention)."""
        return self._sigma_tau(self.convention.to_data_ward(t))

    def d_alpha(self, t: Tensor) -> Tensor:
        """``d alpha / dt`` at time ``t`` (this path's convention)."""
        return self.convention.velocity_sign * self._d_alpha_tau(self.convention.to_data_ward(t))

    def d_sigma(self, t: Tensor) -> Tensor:
        """``d sigma / dt`` at time ``t`` (this path's convention)."""
        return self.convention.velocity_sign * self._d_sigma_tau(self.convention.to_data_ward(t))

    def interpolate(self, data: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """``x_t = alpha(t) data + sigma(t) noise`` for a (B,) time ``t`` in this path's convention."""
        return _bcast(self.alpha(t), data) * data + _bcast(self.sigma(t), data) * noise

    def velocity(self, data: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """Conditional velocity ``u*(x_t, t) = d_alpha data + d_sigma noise`` (``dx/dt`` in this convention)."""
        return _bcast(self.d_alpha(t), data) * data + _bcast(self.d_sigma(t), data) * noise

    def noise_from_velocity(self, x: Tensor, v: Tensor, t: Tensor) -> Tensor:
        """The noise ``eps`` implied by state ``x`` and velocity ``v`` at time ``t``."""
        a, s = _bcast(self.alpha(t), x), _bcast(self.sigma(t), x)
        da, ds = _bcast(self.d_alpha(t), x), _bcast(self.d_sigma(t), x)
        # x = a*data + s*eps and v = da*data + ds*eps, solved for eps
        return (a * v - da * x) / (a * ds - da * s)

    def score_from_velocity(self, x: Tensor, v: Tensor, t: Tensor) -> Tensor:
        """Score ``grad log p_t(x) = -E[eps | x] / sigma`` from the velocity (SiT's velocity-to-score map)."""
        return -self.noise_from_velocity(x, v, t) / _bcast(self.sigma(t), x)

    def data_from_velocity(self, x: Tensor, v: Tensor, t: Tensor) -> Tensor:
        """The data estimate ``E[data | x]`` implied by ``x`` and ``v`` at time ``t``."""
        a, s = _bcast(self.alpha(t), x), _bcast(self.sigma(t), x)
        da, ds = _bcast(self.d_alpha(t), x), _bcast(self.d_sigma(t), x)
        return (ds * x - s * v) / (a * ds - da * s)
