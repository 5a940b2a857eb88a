"""Helpers shared by the benchmark scripts (run as ``python benchmarks/bench_*.py``)."""

from __future__ import annotations

import torch


@torch.no_grad()
def randomize(model: torch.nn.Module, std: float = 0.02) -> torch.nn.Module:
    """Fill every trainable parameter with N(0, std): the official zero-initialised adaLN and output layers
    would make the velocity identically zero, hiding precision differences and favouring sparse kernels."""
    g = torch.Generator().manual_seed(1234)
    for p in model.parameters():
        if p.requires_grad:
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return model


def sync() -> None:
    """Wait for queued device work, so host clocks time what ran."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
