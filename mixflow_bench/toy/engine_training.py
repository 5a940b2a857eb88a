"""One small study model trained through the project's training engine (AdamW + EMA, resumable, on the CPU)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import Tensor, nn


def train_small_model(
    model: nn.Module,
    objective: Any,
    x: Tensor,
    y: Tensor,
    *,
    steps: int,
    batch_size: int,
    lr: float,
    ema_decay: float,
    grad_clip: float | None,
    seed: int,
    out_dir: Path,
    recipe: dict[str, Any],
    **config: Any,
) -> dict[str, Tensor]:
    """Train ``model`` on the in-memory ``(x, y)`` for ``steps``; returns the EMA weights of the last checkpoint.

    ``config`` passes further :class:`~mixflow_bench.train.engine.TrainConfig` fields (e.g. ``fused_adamw``).
    """
    from mixflow_bench.train.batches import InMemoryBatches
    from mixflow_bench.train.checkpoint import load_checkpoint
    from mixflow_bench.train.engine import TrainConfig, train

    settings = TrainConfig(
        steps=steps,
        global_batch_size=batch_size,
        lr=lr,
        ema_decay=ema_decay,
        grad_clip=grad_clip,
        checkpoint_every=steps,
        log_every=max(steps // 5, 1),
        seed=seed,
        keep_last=1,
        device="cpu",
        **config,
    )
    batches = InMemoryBatches(x, y, batch_size, seed)
    result = train(model, objective, batches, settings, out_dir, progress=False, extra={"recipe": recipe})
    return load_checkpoint(result.last_checkpoint)["ema"]


__all__ = ["train_small_model"]
