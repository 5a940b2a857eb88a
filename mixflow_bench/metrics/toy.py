"""Metrics for vector data: the Fréchet distance in data space, and the exact NLL under a known density."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from mixflow_bench.metrics.frechet import fd_moments, stats_from_features


def gaussian_stats(x: Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (float64, ``np.cov`` with rowvar=False) of flattened samples."""
    st = stats_from_features(x)
    return st.mu, st.sigma


def frechet_distance(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray) -> float:
    """The data-space Fréchet distance through symmetric eigendecompositions, which stay real and accurate for
    the rank-deficient covariances of small sample sets (digits' constant corner pixels):
    :func:`mixflow_bench.metrics.frechet.fd_moments` with ``method="eigh"``."""
    return fd_moments(mu1, cov1, mu2, cov2, method="eigh")


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
