"""A small class-conditional velocity MLP for vector data (2-D toys, 8x8 digits), CPU-trainable in seconds."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from mixflow_bench.flow.conventions import TimeConvention


def sinusoidal_embedding(t: Tensor, dim: int, max_period: float = 10_000.0) -> Tensor:
    """``[cos(t f_k), sin(t f_k)]`` with ``f_k = max_period^(-k/half)``, as SiT embeds its raw time."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None] * 1000.0
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class ToyVelocityMLP(nn.Module):
    """``forward(x, t, y) -> dx/dt`` for x of shape (B, *data_shape); label ``num_classes`` is the null label."""

    def __init__(
        self,
        data_shape: tuple[int, ...] = (2,),
        num_classes: int = 1,
        hidden: int = 256,
        depth: int = 3,
        time_dim: int = 64,
        convention: TimeConvention = TimeConvention.DATA_AT_1,
    ):
        super().__init__()
        self.data_shape = tuple(data_shape)
        self.num_classes = num_classes
        self.convention = TimeConvention(convention)
        self.time_dim = time_dim
        dim = math.prod(self.data_shape)
        self.label_embed = nn.Embedding(num_classes + 1, hidden)
        self.time_mlp = nn.Sequential(nn.Linear(time_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.input = nn.Linear(dim, hidden)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
            for _ in range(depth)
        )
        self.output = nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, dim))
        nn.init.zeros_(self.output[1].weight)
        nn.init.zeros_(self.output[1].bias)

    def forward(self, x: Tensor, t: Tensor, y: Tensor) -> Tensor:
        cond = self.time_mlp(sinusoidal_embedding(t, self.time_dim)) + self.label_embed(y)
        h = self.input(x.flatten(1)) + cond
        for block in self.blocks:
            h = h + block(h + cond)
        return self.output(h).reshape(x.shape)
