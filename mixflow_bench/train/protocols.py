"""The two interfaces the training engine is written against: an objective and a source of batches.

Objectives (flow matching, MixFlow) and data (pre-encoded latents, in-memory toys) live elsewhere; the engine
only needs these methods, so it never imports them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn


@runtime_checkable
class TrainingObjective(Protocol):
    """A per-sample training loss whose randomness is drawn up front, for the whole global batch."""

    def draw(
        self, batch_size: int, sample_shape: tuple[int, ...], generator: torch.Generator
    ) -> dict[str, Tensor]:
        """All random numbers for ``batch_size`` samples (noise, times, label-drop mask...), on ``generator.device``.

        Every tensor's first dimension is the batch, so a rank can take its slice of the global draw.
        """
        ...

    def loss(self, model: nn.Module, x1: Tensor, y: Tensor, randomness: dict[str, Tensor]) -> Tensor:
        """Per-sample losses ``(B,)`` for data ``x1 (B, *sample_shape)`` and labels ``y (B,)``."""
        ...


@runtime_checkable
class Batches(Protocol):
    """An iterable of ``(x1, y)`` batches that can save and restore its position.

    A batch holds either the whole global batch or this rank's slice of it (``global_batch_size //
    world_size`` rows, rank ``r`` holding rows ``[r*B_local, (r+1)*B_local)`` of the global batch).
    ``state_dict()`` taken after ``k`` batches were yielded must make a fresh iterator start at batch ``k``.
    """

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...
