"""Tiny model, objective and data shared by the training-engine tests (no tests here).

The objective is plain linear-path flow matching in ``DATA_AT_1`` time (t=0 noise, t=1 data), written
here so the engine tests do not depend on ``mixflow_bench.flow.objectives``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

NUM_CLASSES = 3
SAMPLE_SHAPE = (2, 3)


class TinyVelocityMLP(nn.Module):
    """``model(x, t, y)`` on ``x (B, 2, 3)``; a buffer checks that EMA copies buffers."""

    def __init__(self, hidden: int = 16, dropout: float = 0.0) -> None:
        super().__init__()
        dim = SAMPLE_SHAPE[0] * SAMPLE_SHAPE[1]
        self.label = nn.Embedding(NUM_CLASSES + 1, hidden)
        self.inp = nn.Linear(dim + 1, hidden)
        self.out = nn.Sequential(nn.SiLU(), nn.Dropout(dropout), nn.Linear(hidden, dim))
        self.register_buffer("calls", torch.zeros(()))

    def forward(self, x: Tensor, t: Tensor, y: Tensor) -> Tensor:
        if self.training:
            self.calls += 1
        h = self.inp(torch.cat([x.flatten(1), t[:, None].to(x.dtype)], dim=1)) + self.label(y)
        return self.out(h).view_as(x)


class FlowMatchingObjective:
    """Linear-path flow matching, ``DATA_AT_1``: ``x_t = t*x1 + (1-t)*noise``, target ``x1 - noise``."""

    def __init__(self, label_drop: float = 0.25) -> None:
        self.label_drop = label_drop

    def draw(
        self, batch_size: int, sample_shape: tuple[int, ...], generator: torch.Generator
    ) -> dict[str, Tensor]:
        return {
            "noise": torch.randn((batch_size, *sample_shape), generator=generator, device=generator.device),
            "t": torch.rand(batch_size, generator=generator, device=generator.device),
            "drop": torch.rand(batch_size, generator=generator, device=generator.device) < self.label_drop,
        }

    def loss(self, model: nn.Module, x1: Tensor, y: Tensor, randomness: dict[str, Tensor]) -> Tensor:
        noise, t = randomness["noise"], randomness["t"]
        y = torch.where(randomness["drop"], torch.full_like(y, NUM_CLASSES), y)
        tb = t.view(-1, *([1] * (x1.ndim - 1)))
        xt = tb * x1 + (1 - tb) * noise
        return (model(xt, t, y) - (x1 - noise)).pow(2).flatten(1).mean(1)


def make_data(n: int = 64, seed: int = 123) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((n, *SAMPLE_SHAPE), generator=g) * 0.5 + 1.0
    y = torch.randint(0, NUM_CLASSES, (n,), generator=g)
    return x, y


def make_model(seed: int = 0, dropout: float = 0.0) -> TinyVelocityMLP:
    torch.manual_seed(seed)
    return TinyVelocityMLP(dropout=dropout)
