"""``fd-data`` for the toy recipes: the data-space Fréchet distance of an ADM npz against held-out toy data."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mixflow_bench.metrics.frechet import fd_moments, stats_from_features
from mixflow_bench.metrics.npz_stream import NpzImageReader

TOY_REFERENCES = ("digits-heldout",)

__all__ = ["TOY_REFERENCES", "fd_data", "heldout_reference", "images_to_data"]


def images_to_data(images: np.ndarray) -> np.ndarray:
    """uint8 NHWC gray images (the toy decode writes equal channels) -> data in [-1, 1] of shape (N, H, W)."""
    return images[..., 0].astype(np.float64) / 127.5 - 1.0


def heldout_reference(name: str) -> np.ndarray:
    """Held-out toy data, quantized as samples are: ``digits-heldout`` (N, 8, 8) in [-1, 1]."""
    if name == "digits-heldout":
        from mixflow_bench.toy.datasets import load_digits_split, to_uint8_images

        _, held = load_digits_split()
        return images_to_data(to_uint8_images(held.x))
    raise ValueError(f"unknown toy reference {name!r} (known: {', '.join(TOY_REFERENCES)})")


def fd_data(samples: Path, reference: str) -> float:
    """``fd-data`` of the images in ``samples`` (ADM npz) against the toy reference ``reference``."""
    with NpzImageReader(samples) as reader:
        x = images_to_data(np.concatenate(list(reader.iter_batches(4096))))
    a, b = stats_from_features(x), stats_from_features(heldout_reference(reference))
    return fd_moments(a.mu, a.sigma, b.mu, b.sigma, method="eigh")
