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


def _psd_sqrt(cov: np.ndarray) -> np.ndarray:
    w, v = linalg.eigh(cov)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray) -> float:
    """``|mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1^1/2 S2 S1^1/2)^1/2)``.

    The cross term comes from the symmetric PSD matrix ``S1^1/2 S2 S1^1/2`` through eigen-decompositions, which
    stays real and accurate for the rank-deficient covariances of small sample sets (digits' constant corner
    pixels), where ``sqrtm(S1 @ S2)`` of the non-symmetric product can turn complex or NaN. (ADM-exact FID, with
    the evaluator's own square root and fallback, is ``mixflow_bench.metrics.frechet``.)
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    cov1, cov2 = np.atleast_2d(np.asarray(cov1, np.float64)), np.atleast_2d(np.asarray(cov2, np.float64))
    if mu1.shape != mu2.shape or cov1.shape != cov2.shape:
        raise ValueError(f"shape mismatch: means {mu1.shape} vs {mu2.shape}, covariances {cov1.shape} vs {cov2.shape}")
    s1 = _psd_sqrt(cov1)
    middle = s1 @ cov2 @ s1
    cross = np.sqrt(np.clip(linalg.eigvalsh((middle + middle.T) / 2.0), 0.0, None)).sum()
    return float(((mu1 - mu2) ** 2).sum() + np.trace(cov1) + np.trace(cov2) - 2.0 * cross)


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
