"""Data-space Fréchet distance (``fd-data``) for the toy recipes, whose samples are small enough to compare raw.

``FD = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1^1/2 S2 S1^1/2)^1/2)``. The cross term is computed from the
symmetric PSD matrix ``S1^1/2 S2 S1^1/2`` through eigen-decompositions, which stays real and accurate for the
rank-deficient covariances that small sample sets (and digits' constant corner pixels) give, where a plain
``sqrtm(S1 @ S2)`` of a non-symmetric product can return complex or NaN values.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import linalg


def _psd_sqrt(cov: np.ndarray) -> np.ndarray:
    w, v = linalg.eigh(cov)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray) -> float:
    """Fréchet distance between the Gaussians N(mu1, cov1) and N(mu2, cov2)."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    cov1, cov2 = np.asarray(cov1, np.float64), np.asarray(cov2, np.float64)
    if mu1.shape != mu2.shape or cov1.shape != cov2.shape:
        raise ValueError(f"shape mismatch: means {mu1.shape} vs {mu2.shape}, covariances {cov1.shape} vs {cov2.shape}")
    s1 = _psd_sqrt(cov1)
    middle = s1 @ cov2 @ s1
    cross = np.sqrt(np.clip(linalg.eigvalsh((middle + middle.T) / 2.0), 0.0, None)).sum()
    return float(((mu1 - mu2) ** 2).sum() + np.trace(cov1) + np.trace(cov2) - 2.0 * cross)


def stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (unbiased) covariance of rows of ``x`` flattened to vectors."""
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    return x.mean(0), np.cov(x, rowvar=False)


def images_to_data(images: np.ndarray) -> np.ndarray:
    """uint8 NHWC gray images (the toy decode writes equal channels) -> data in [-1, 1] of shape (N, H, W)."""
    return images[..., 0].astype(np.float64) / 127.5 - 1.0


def heldout_reference(name: str) -> np.ndarray:
    """Held-out toy data, quantized as samples are: ``digits-heldout`` (N, 8, 8) in [-1, 1]."""
    if name == "digits-heldout":
        from mixflow_bench.toy.datasets import load_digits_split, to_uint8_images

        _, held = load_digits_split()
        return images_to_data(to_uint8_images(held.x))
    raise ValueError(f"unknown toy reference {name!r} (known: digits-heldout)")


def fd_data(samples: Path, reference: str) -> float:
    """``fd-data`` of the images in ``samples`` (ADM npz) against the toy reference ``reference``."""
    with np.load(samples) as data:
        x = images_to_data(data["arr_0"])
    return frechet_distance(*stats(x), *stats(heldout_reference(reference)))
