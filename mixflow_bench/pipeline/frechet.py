"""``fd-data`` for the toy recipes: the data-space Fréchet distance of an ADM npz against held-out toy data."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mixflow_bench.metrics.toy import frechet_distance, gaussian_stats

__all__ = ["fd_data", "frechet_distance", "heldout_reference", "images_to_data"]


def images_to_data(images: np.ndarray) -> np.ndarray:
    """uint8 NHWC gray images (the toy decode writes equal channels) -> data in [-1, 1] of shape (N, H, W)."""
    return images[..., 0].astype(np.float64) / 127.5 - 1.0


def heldout_reference(name: str) -> np.ndarray:
    """Held-out toy data, quantized as samples are: ``digits-heldout`` (N, 8, 8) in [-1, 1]."""
    if name == "digits-heldout":
        from mixflow_bench.data.toy import load_digits_split, to_uint8_images

        _, held = load_digits_split()
        return images_to_data(to_uint8_images(held.x))
    raise ValueError(f"unknown toy reference {name!r} (known: digits-heldout)")


def fd_data(samples: Path, reference: str) -> float:
    """``fd-data`` of the images in ``samples`` (ADM npz) against the toy reference ``reference``."""
    with np.load(samples) as data:
        x = images_to_data(data["arr_0"])
    return frechet_distance(*gaussian_stats(x), *gaussian_stats(heldout_reference(reference)))
