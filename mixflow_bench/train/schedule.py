"""Learning-rate schedules: linear warm-up, then constant, linear or cosine decay to ``final_lr``.

``step`` counts optimizer updates already done, so the first update uses ``learning_rate(0, ...)``.
Warm-up: ``lr * (step + 1) / warmup_steps`` while ``step < warmup_steps``. Decay runs from ``decay_start``
(base lr) to ``decay_end`` (``final_lr``), and stays at ``final_lr`` after; RAE's recipe is a linear decay
from 2e-4 to 2e-5 between two given steps.
"""

from __future__ import annotations

import math

SCHEDULES = ("constant", "linear", "cosine")


def learning_rate(
    step: int,
    *,
    base_lr: float,
    schedule: str = "constant",
    warmup_steps: int = 0,
    final_lr: float | None = None,
    decay_start: int = 0,
    decay_end: int = 1,
) -> float:
    """The learning rate for the update after ``step`` previous updates."""
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown lr schedule {schedule!r}; expected one of {SCHEDULES}")
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    if schedule == "constant":
        return base_lr
    if final_lr is None:
        raise ValueError(f"lr schedule {schedule!r} needs final_lr")
    if decay_end <= decay_start:
        raise ValueError(f"decay_end ({decay_end}) must be after decay_start ({decay_start})")
    progress = min(max((step - decay_start) / (decay_end - decay_start), 0.0), 1.0)
    if schedule == "linear":
        return base_lr + (final_lr - base_lr) * progress
    return final_lr + 0.5 * (base_lr - final_lr) * (1.0 + math.cos(math.pi * progress))
