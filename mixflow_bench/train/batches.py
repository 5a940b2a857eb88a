"""Batches of an in-memory tensor data set, with the resumable interface the engine expects.

Useful for toy data and tests; pre-encoded image latents come from ``mixflow_bench.data``. Each epoch is a
fresh permutation drawn from ``(seed, epoch)``, so the order does not depend on the world size: rank ``r``
gets rows ``[r*B_local, (r+1)*B_local)`` of each global batch.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor


class InMemoryBatches:
    """One epoch of shuffled global batches per ``iter()`` (this rank's slice), incomplete batches dropped."""

    def __init__(
        self, x: Tensor, y: Tensor, global_batch_size: int, seed: int, rank: int = 0, world_size: int = 1
    ) -> None:
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"x has {x.shape[0]} rows but y has {y.shape[0]}")
        if global_batch_size % world_size:
            raise ValueError(f"global batch {global_batch_size} is not divisible by world size {world_size}")
        if x.shape[0] < global_batch_size:
            raise ValueError(
                f"data set of {x.shape[0]} rows is smaller than one batch of {global_batch_size}"
            )
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside [0, {world_size})")
        self.x, self.y = x, y
        self.global_batch_size = global_batch_size
        self.local_batch_size = global_batch_size // world_size
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.batches_per_epoch = x.shape[0] // global_batch_size
        self.epoch = 0
        self.batch = 0

    def _order(self, epoch: int) -> Tensor:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.x.shape[0], generator=generator)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        if self.batch >= self.batches_per_epoch:
            self.epoch, self.batch = self.epoch + 1, 0
        order = self._order(self.epoch)
        while self.batch < self.batches_per_epoch:
            start = self.batch * self.global_batch_size + self.rank * self.local_batch_size
            index = order[start : start + self.local_batch_size]
            self.batch += 1
            yield self.x[index], self.y[index]

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "batch": self.batch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.batch = int(state["epoch"]), int(state["batch"])
