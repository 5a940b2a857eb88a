"""Small real and synthetic data for CPU reproductions.

* ``digits``: scikit-learn's 1,797 handwritten 8x8 digits (real data shipped with the package), scaled to
  [-1, 1], 10 classes.
* ``toy2d``: a mixture of 8 isotropic Gaussians on a circle, whose density is known in closed form, so samples
  can be scored exactly (negative log-likelihood under the true density).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

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
