"""Metrics for vector data: the Fréchet distance in data space, and the exact NLL under a known density."""

from __future__ import annotations

import numpy as np
import torch
from scipy import linalg
from torch import Tensor


def gaussian_stats(x: Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (float64, ``np.cov`` with rowvar=False) of flattened samples."""
    a = np.asarray(x.detach().cpu() if isinstance(x, Tensor) else x, dtype=np.float64).reshape(len(x), -1)
    return a.mean(0), np.atleast_2d(np.cov(a, rowvar=False))


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """``|mu1 - mu2|^2 + tr(S1 + S2 - 2 sqrt(S1 S2))``, with a small diagonal offset if the root is singular."""
    covmean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        offset = np.eye(len(sigma1)) * 1e-6
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    covmean = np.real(covmean)
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


def data_fd(samples: Tensor, reference: Tensor) -> float:
    """Fréchet distance between Gaussian fits of two sets of data points (flattened)."""
    return frechet_distance(*gaussian_stats(samples), *gaussian_stats(reference))


def mean_nll(samples: Tensor, log_density) -> float:
    """Mean negative log-likelihood of samples under a known density ``log_density(x) -> (N,)``."""
    return float(-log_density(samples.double()).mean())


def finite_or_raise(x: Tensor, what: str) -> Tensor:
    if not torch.isfinite(x).all():
        raise FloatingPointError(f"{what} contains NaN or inf")
    return x
