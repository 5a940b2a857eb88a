"""Small real and synthetic data for CPU reproductions.

* ``digits``: scikit-learn's 1,797 handwritten 8x8 digits (real data shipped with the package), scaled to
  [-1, 1], 10 classes.
* ``toy2d``: a mixture of 8 isotropic Gaussians on a circle, whose density is known in closed form, so samples
  can be scored exactly (negative log-likelihood under the true density).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor


@dataclass
class VectorDataset:
    """Data points ``x`` (N, *shape), labels ``y`` (N,), and the split they belong to."""

    name: str
    x: Tensor
    y: Tensor
    num_classes: int

    @property
    def data_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    def __len__(self) -> int:
        return len(self.x)


def load_digits_split(num_heldout: int = 597, seed: int = 0) -> tuple[VectorDataset, VectorDataset]:
    """(train, held-out) split of scikit-learn's digits, pixels in [-1, 1], shape (8, 8)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.tensor(bunch.images, dtype=torch.float32) / 8.0 - 1.0  # 0..16 -> -1..1
    y = torch.tensor(bunch.target, dtype=torch.long)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    held, train = perm[:num_heldout], perm[num_heldout:]
    return (
        VectorDataset("digits", x[train], y[train], 10),
        VectorDataset("digits-heldout", x[held], y[held], 10),
    )


@dataclass(frozen=True)
class GaussianRing:
    """A mixture of ``modes`` equal-weight isotropic Gaussians (std ``std``) on a circle of ``radius``."""

    modes: int = 8
    radius: float = 2.0
    std: float = 0.15

    def centers(self) -> Tensor:
        angles = torch.arange(self.modes, dtype=torch.float64) * (2 * math.pi / self.modes)
        return self.radius * torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        idx = torch.randint(self.modes, (n,), generator=generator)
        eps = torch.randn(n, 2, generator=generator, dtype=torch.float64)
        return (self.centers()[idx] + self.std * eps).float()

    def log_density(self, x: Tensor) -> Tensor:
        """Exact log p(x) of the mixture, (N,)."""
        d2 = ((x.double()[:, None, :] - self.centers()[None]) ** 2).sum(-1)
        log_comp = -d2 / (2 * self.std**2) - math.log(2 * math.pi * self.std**2)
        return torch.logsumexp(log_comp, dim=1) - math.log(self.modes)


def load_toy2d_split(num_train: int = 8192, num_heldout: int = 2048, seed: int = 0):
    """(train, held-out, density) of the 2-D Gaussian ring; one class."""
    ring = GaussianRing()
    g = torch.Generator().manual_seed(seed)
    x = ring.sample(num_train + num_heldout, g)
    y = torch.zeros(len(x), dtype=torch.long)
    return (
        VectorDataset("toy2d", x[:num_train], y[:num_train], 1),
        VectorDataset("toy2d-heldout", x[num_train:], y[num_train:], 1),
        ring,
    )


def to_uint8_images(x: Tensor) -> np.ndarray:
    """Digits in [-1, 1] of shape (N, 8, 8) -> uint8 RGB (N, 8, 8, 3), rounding as SiT does (127.5 x + 128)."""
    img = (127.5 * x.float() + 128.0).clamp(0, 255).to(torch.uint8)
    return img[..., None].expand(*img.shape, 3).contiguous().numpy()


TOY_REFERENCES = ("digits-heldout",)


def resolve_toy_reference(reference: str) -> str:
    """An evaluation reference: a toy data set's name becomes its npz (:func:`toy_reference_npz`); anything else
    (a path, an artifact name) is returned as it is."""
    return str(toy_reference_npz(reference)) if reference in TOY_REFERENCES else reference


def toy_reference_npz(name: str, folder: Path | None = None) -> Path:
    """The held-out toy data ``name`` (``digits-heldout``) as an ADM npz of uint8 images, quantized as samples
    are; written once into ``folder`` (default: the reference statistics cache)."""
    if name not in TOY_REFERENCES:
        raise ValueError(f"unknown toy reference {name!r} (known: {', '.join(TOY_REFERENCES)})")
    from mixflow_bench.metrics.pack import write_image_stream
    from mixflow_bench.metrics.reference import default_cache_dir

    out = (folder or default_cache_dir()) / "toy" / f"{name}.npz"
    if not out.is_file():
        _, held = load_digits_split()
        images = to_uint8_images(held.x)
        write_image_stream(out, iter(images), len(images), images.shape[1], images.shape[2])
    return out
