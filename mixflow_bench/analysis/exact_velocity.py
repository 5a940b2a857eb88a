"""Exact marginal velocity fields of the linear path for data whose density is known in closed form.

On the data-ward linear path ``x = tau x1 + (1 - tau) x0`` with ``x0 ~ N(0, I)`` the marginal velocity is
``E[x1 - x0 | x_tau = x]``. For a Gaussian (or a mixture of isotropic Gaussians) this conditional expectation is
a closed form, which gives a "perfect model" for the Slow-Flow analysis: any slow-down it shows comes from the
sampler's discretisation alone.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from mixflow_bench.toy.datasets import GaussianRing

VelocityFn = Callable[[Tensor, Tensor], Tensor]


def _tau(t: Tensor, x: Tensor) -> Tensor:
    t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
    return t.reshape(-1, *([1] * (x.ndim - 1))) if t.ndim == 1 else t


def gaussian_velocity(mean: Tensor, std: Tensor) -> VelocityFn:
    """``v(x, tau)`` (data-ward) for data ``N(mean, diag std^2)``, per dimension:
    ``mean + (tau std^2 - (1 - tau)) / (tau^2 std^2 + (1 - tau)^2) * (x - tau mean)``.
    """

    def velocity(x: Tensor, t: Tensor) -> Tensor:
        tau = _tau(t, x)
        mu, s2 = mean.to(x), std.to(x) ** 2
        gain = (tau * s2 - (1.0 - tau)) / (tau * tau * s2 + (1.0 - tau) ** 2)
        return mu + gain * (x - tau * mu)

    return velocity


def ring_velocity(ring: GaussianRing | None = None) -> VelocityFn:
    """``v(x, tau)`` (data-ward) for the toy2d Gaussian ring: the posterior-weighted mix of per-mode velocities."""
    ring = ring or GaussianRing()

    def velocity(x: Tensor, t: Tensor) -> Tensor:
        xd = x.double()
        tau = _tau(t, xd)  # (B, 1)
        centers = ring.centers().to(xd.device)  # (K, 2)
        var = tau * tau * ring.std**2 + (1.0 - tau) ** 2  # (B, 1): per-mode variance of x_tau
        diff = xd[:, None, :] - tau[:, :, None] * centers[None]  # (B, K, 2)
        logits = -(diff * diff).sum(-1) / (2.0 * var)  # equal weights and variances: constants cancel
        w = torch.softmax(logits, dim=1)  # (B, K)
        gain = (tau * ring.std**2 - (1.0 - tau)) / var  # (B, 1)
        per_mode = centers[None] + gain[:, :, None] * diff  # (B, K, 2)
        return (w[:, :, None] * per_mode).sum(1).to(x.dtype)

    return velocity
