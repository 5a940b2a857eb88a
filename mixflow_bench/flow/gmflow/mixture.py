"""Gaussian mixtures with one shared isotropic variance, factorised per pixel, and their closed-form algebra.

A :class:`GaussianMixture` holds, for a batch of ``B`` images of ``C`` channels on an ``H x W`` grid, one
``K``-component mixture per pixel over the ``C``-vector of that pixel:

* ``means``      (B, K, C, H, W)
* ``logweights`` (B, K, 1, H, W), normalised over K (log-softmax)
* ``logstds``    (B, 1, 1, 1, 1), one log standard deviation per sample, shared by components and pixels

Vector data (2-D toys) are one pixel: shape (B, C, 1, 1). These functions are time-free; the time-dependent
maps live in :mod:`mixflow_bench.flow.gmflow.transitions`.

The products below are the identities ``N(x; a, A) N(x; b, B) = N(a; b, A + B) N(x; (B a + A b)/(A + B),
AB/(A + B))`` for isotropic ``A, B``, and the ratio of two isotropic Gaussians, which is a Gaussian as long as
the denominator is the wider one.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

EPS = 1e-6


class IsoGaussian(NamedTuple):
    """An isotropic Gaussian per pixel: ``mean`` (B, C, H, W), ``var`` (B, 1, H, W) or (B, 1, 1, 1)."""

    mean: Tensor
    var: Tensor


class GaussianMixture(NamedTuple):
    """Per-pixel Gaussian mixture with one shared isotropic standard deviation per sample (see module doc)."""

    means: Tensor
    logweights: Tensor
    logstds: Tensor

    @property
    def num_components(self) -> int:
        return self.means.shape[1]

    @property
    def channels(self) -> int:
        return self.means.shape[2]

    @property
    def variance(self) -> Tensor:
        """Shared component variance ``s^2``, (B, 1, 1, 1, 1)."""
        return torch.exp(2.0 * self.logstds)

    def weights(self) -> Tensor:
        return self.logweights.softmax(dim=1)

    def mean(self) -> Tensor:
        """Mixture mean ``sum_k A_k mu_k``, (B, C, H, W)."""
        return (self.weights() * self.means).sum(dim=1)

    def iso_gaussian(self) -> IsoGaussian:
        """Moment-matched isotropic surrogate: mean, and ``(1/C) sum_k A_k |mu_k - mean|^2 + s^2`` per pixel."""
        w = self.weights()
        mean = (w * self.means).sum(dim=1, keepdim=True)
        spread = (w * (self.means - mean).square()).sum(dim=1, keepdim=True).mean(dim=2, keepdim=True)
        return IsoGaussian(mean.squeeze(1), (spread + self.variance).squeeze(1))

    def log_prob(self, x: Tensor) -> Tensor:
        """``log q(x)`` per pixel, (B, H, W), for ``x`` of shape (B, C, H, W)."""
        inv_std = torch.exp(-self.logstds)
        z = (x.unsqueeze(1) - self.means) * inv_std
        c = self.channels
        comp = -0.5 * z.square().sum(dim=2) - c * self.logstds.squeeze(2) - 0.5 * c * math.log(2 * math.pi)
        return torch.logsumexp(comp + self.logweights.squeeze(2), dim=1)

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        """One draw per pixel, (B, C, H, W): a component from the weights, then its Gaussian noise."""
        b, k, c, h, w = self.means.shape
        probs = self.weights().permute(0, 2, 3, 4, 1).reshape(-1, k)
        u = torch.rand(probs.shape[0], 1, generator=generator, device="cpu", dtype=torch.float64)
        normal = torch.randn((b, c, h, w), generator=generator, device="cpu")
        return self.sample_from(u.to(probs.device), normal.to(self.means))

    def sample_from(self, uniform: Tensor, normal: Tensor) -> Tensor:
        """A draw from given randomness: ``uniform`` (B*H*W, 1) picks a component by inverse CDF, ``normal``
        (B, C, H, W) is the standard Gaussian noise scaled by the shared std."""
        b, k, c, h, w = self.means.shape
        probs = self.weights().permute(0, 2, 3, 4, 1).reshape(-1, k).double()
        cdf = probs.cumsum(dim=1)
        idx = torch.searchsorted(cdf, (uniform.double() * cdf[:, -1:]).contiguous()).clamp(max=k - 1)
        idx = idx.reshape(b, h, w, 1).permute(0, 3, 1, 2).unsqueeze(2)  # (B, 1, 1, H, W)
        chosen = self.means.gather(1, idx.expand(b, 1, c, h, w)).squeeze(1)
        return chosen + torch.exp(self.logstds).squeeze(1) * normal

    def mul_iso_gaussian(self, g: IsoGaussian) -> GaussianMixture:
        """Normalised product ``q(x) N(x; m, v)``: again a mixture with the same K (shared variance kept)."""
        g_mean, g_var = g.mean.unsqueeze(1), g.var.unsqueeze(1)
        s2 = self.variance
        norm = (g_var + s2).clamp(min=EPS)
        means = (g_var * self.means + s2 * g_mean) / norm
        delta = (self.means - g_mean).square().sum(dim=2, keepdim=True) * (-0.5 / norm)
        logweights = (self.logweights + delta).log_softmax(dim=1)
        logstds = self.logstds + 0.5 * torch.log(g_var) - 0.5 * torch.log(norm)
        return GaussianMixture(means, logweights, logstds)

    def map(self, fn) -> GaussianMixture:
        """Apply ``fn`` to every tensor (dtype casts, batch slicing)."""
        return GaussianMixture(fn(self.means), fn(self.logweights), fn(self.logstds))


def gaussian_ratio(num: IsoGaussian, den: IsoGaussian) -> IsoGaussian:
    """``N(x; num) / N(x; den)`` as an (unnormalised) isotropic Gaussian; needs ``den.var > num.var``."""
    norm = (den.var - num.var).clamp(min=EPS)
    return IsoGaussian((den.var * num.mean - num.var * den.mean) / norm, den.var * num.var / norm)


def gaussian_product(a: IsoGaussian, b: IsoGaussian) -> IsoGaussian:
    """``N(x; a) N(x; b)`` normalised."""
    norm = (a.var + b.var).clamp(min=EPS)
    return IsoGaussian((b.var * a.mean + a.var * b.mean) / norm, a.var * b.var / norm)


def average_variance(g: IsoGaussian) -> IsoGaussian:
    """The same Gaussian with its variance averaged over the pixels, (B, 1, 1, 1)."""
    return IsoGaussian(g.mean, g.var.mean(dim=(-2, -1), keepdim=True))


def as_image(x: Tensor) -> Tensor:
    """Vector data (B, C) -> one-pixel images (B, C, 1, 1); images pass unchanged."""
    return x.reshape(*x.shape, 1, 1) if x.ndim == 2 else x
