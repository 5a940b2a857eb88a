"""Golden values: fixed outputs of the official GMFlow (Lakonik/GMFlow c3697df) and κ-FC (NazirNayal8/MixFlow
64bc628) functions, computed once from their code and stored as numbers in ``tests/fixtures/golden/*.npz``.

Each fixture holds the inputs and the official outputs of one formula. Where a network is involved, its weights are
not stored: both sides fill the same parameter names with :func:`fill_`, a fixed function of the seed, so the
official module and this project's (which load each other's state dicts strictly) hold equal weights.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tolerance import assert_close_to_scale
from torch import nn

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "golden"


def load(name: str) -> dict[str, torch.Tensor]:
    """The arrays of fixture ``name`` as tensors (their stored dtype)."""
    with np.load(FIXTURES / f"{name}.npz") as data:
        return {key: torch.from_numpy(data[key].copy()) for key in data.files}


def fill_(module: nn.Module, seed: int, prefix: str = "") -> nn.Module:
    """Overwrite every parameter with N(0, 1) / sqrt(fan_in) (1-D ones: N(0, 0.1^2)), drawn in the order of the
    sorted parameter names (``prefix`` removed) from one generator seeded with ``seed``."""
    g = torch.Generator().manual_seed(seed)
    params = {name.removeprefix(prefix): p for name, p in module.named_parameters()}
    with torch.no_grad():
        for name in sorted(params):
            p = params[name]
            scale = p[0].numel() ** -0.5 if p.ndim >= 2 else 0.1
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64).to(p.dtype) * scale)
    return module


def assert_close(actual: torch.Tensor, expected: torch.Tensor, ulps: float, what: str) -> None:
    """:func:`tolerance.assert_close_to_scale` after bringing ``actual`` to the fixture's dtype and shape."""
    actual, expected = torch.broadcast_tensors(actual.detach().to(expected.dtype), expected)
    assert_close_to_scale(actual, expected, ulps, msg=f"{what}: ours differs from the official value")
