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


class GaussianMixtureField:
    """Exact velocity fields of the data-ward linear path for data ``sum_k pi_k N(c_k, s^2 I)`` (per class).

    ``centers`` (K, D) with one shared ``std`` s: the toy2d ring (s = 0.15), or a training set (s = 0, the
    empirical distribution: the optimum a flow-matching network would reach if it fitted its training data
    exactly). ``center_labels`` (K,) makes the fields class-conditional (equal weights within a class).

    * :meth:`fm`: the flow-matching optimum ``u_t(x) = E[x1 - x0 | x_t = x]``.
    * :meth:`mixflow`: the MixFlow optimum. MixFlow regresses ``x1 - x0`` from input ``x_m`` with
      ``m ~ U[(1 - gamma) t, t]`` while telling the network ``t``, so the minimiser of its loss at ``(x, t)`` is
      ``int p_m(x) u_m(x) dm / int p_m(x) dm`` over that interval: the true velocity averaged over the slowed
      times, weighted by the marginal density at each. The integral uses Gauss-Legendre nodes.
    """

    def __init__(
        self, centers: Tensor, std: float = 0.0, center_labels: Tensor | None = None, nodes: int = 24
    ) -> None:
        self.centers = centers.reshape(len(centers), -1).double()
        self.std = float(std)
        self.center_labels = None if center_labels is None else center_labels.long()
        g_nodes, g_weights = _gauss_legendre(nodes)
        self.nodes, self.node_weights = g_nodes, g_weights  # on [0, 1]

    def _mask(self, y: Tensor | None, n: int) -> Tensor | None:
        if self.center_labels is None or y is None:
            return None
        return y.reshape(n, 1).to(self.center_labels.device) != self.center_labels[None, :]  # True: excluded

    def log_density_and_velocity(self, x: Tensor, tau: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``(log p_tau(x | y) (B,), u_tau(x) (B, D))`` for flattened ``x`` (B, D) and data-ward ``tau`` (B,)."""
        x = x.reshape(len(x), -1).double()
        tau = tau.double().reshape(-1).expand(len(x))
        if self.center_labels is not None and y is not None:  # one class at a time: only its centres count
            log_p = torch.empty(len(x), dtype=torch.float64, device=x.device)
            u = torch.empty_like(x)
            for label in torch.unique(y).tolist():
                rows = (y == label).nonzero().squeeze(1)
                part = GaussianMixtureField.__new__(GaussianMixtureField)
                part.centers, part.std, part.center_labels = self.centers[self.center_labels == label], self.std, None
                log_p[rows], u[rows] = part.log_density_and_velocity(x[rows], tau[rows])
            return log_p, u
        tau = tau.reshape(-1, 1)
        c = self.centers.to(x.device)
        d = x.shape[1]
        var = tau * tau * self.std**2 + (1.0 - tau) ** 2  # (B, 1)
        d2 = (x * x).sum(1, keepdim=True) - 2.0 * tau * (x @ c.T) + tau * tau * (c * c).sum(1)[None]  # |x - tau c|^2
        logits = -d2.clamp_min(0.0) / (2.0 * var)
        mask = self._mask(y, len(x))
        if mask is not None:
            logits = logits.masked_fill(mask.to(x.device), -torch.inf)
            count = (~mask).sum(1, keepdim=True).double().to(x.device)
        else:
            count = torch.full_like(tau, float(len(c)))
        log_p = torch.logsumexp(logits, 1, keepdim=True) - count.log() - 0.5 * d * torch.log(2 * torch.pi * var)
        w = torch.softmax(logits, 1)  # (B, K)
        gain = (tau * self.std**2 - (1.0 - tau)) / var
        u = (1.0 - gain * tau) * (w @ c) + gain * x  # sum_k w_k (c_k + gain (x - tau c_k))
        return log_p.squeeze(1), u

    def fm(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        """Flow-matching optimum at data-ward ``t`` (B,), shaped like ``x``."""
        tau = torch.as_tensor(t, dtype=torch.float64).expand(len(x)) if torch.as_tensor(t).ndim == 0 else t
        return self.log_density_and_velocity(x, tau, y)[1].reshape(x.shape).to(x.dtype)

    def mixflow(self, x: Tensor, t: Tensor, y: Tensor | None = None, gamma: float = 0.8) -> Tensor:
        """MixFlow optimum at data-ward ``t`` (B,) for slowing ``gamma``, shaped like ``x``."""
        tau = torch.as_tensor(t, dtype=torch.float64).reshape(-1).expand(len(x)).to(x.device)
        lo = (1.0 - gamma) * tau
        width = tau - lo
        logs, vels = [], []
        for node, weight in zip(self.nodes.tolist(), self.node_weights.tolist()):
            log_p, u = self.log_density_and_velocity(x, lo + node * width, y)
            logs.append(log_p + torch.log(torch.tensor(weight, dtype=torch.float64)))
            vels.append(u)
        a = torch.softmax(torch.stack(logs), 0)  # (nodes, B): weight of each slowed time at x
        v = (a[:, :, None] * torch.stack(vels)).sum(0)
        return v.reshape(x.shape).to(x.dtype)


def _gauss_legendre(n: int) -> tuple[Tensor, Tensor]:
    """Gauss-Legendre nodes and weights on [0, 1] (float64)."""
    import numpy as np

    nodes, weights = np.polynomial.legendre.leggauss(n)
    return torch.from_numpy((nodes + 1.0) / 2.0), torch.from_numpy(weights / 2.0)
