"""``fd-data`` for the toy recipes: the data-space Fréchet distance between the images of two ADM npz files.

The toy decode writes gray images (equal channels); both sides are mapped back to data in [-1, 1] and compared
pixel by pixel. The held-out toy reference (``digits-heldout``) is written as such an npz by
:func:`mixflow_bench.data.toy.toy_reference_npz`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mixflow_bench.metrics.frechet import fd_moments, stats_from_features
from mixflow_bench.metrics.npz_stream import NpzImageReader

__all__ = ["fd_data", "images_to_data"]


def images_to_data(images: np.ndarray) -> np.ndarray:
    """uint8 NHWC gray images (the toy decode writes equal channels) -> data in [-1, 1] of shape (N, H, W)."""
    return images[..., 0].astype(np.float64) / 127.5 - 1.0


def _read_data(path: Path) -> np.ndarray:
    with NpzImageReader(path) as reader:
        return images_to_data(np.concatenate(list(reader.iter_batches(4096))))


def fd_data(samples: Path, reference: Path) -> float:
    """``fd-data`` of the images in ``samples`` against those in ``reference`` (both ADM npz files)."""
    a, b = stats_from_features(_read_data(samples)), stats_from_features(_read_data(reference))
    return fd_moments(a.mu, a.sigma, b.mu, b.sigma, method="eigh")
