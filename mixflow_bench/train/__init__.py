"""Model-agnostic training: AdamW + EMA loop with exact resume, DDP via torchrun, atomic checkpoints.

Entry point: :func:`mixflow_bench.train.engine.train` with a :class:`~mixflow_bench.train.engine.TrainConfig`,
an objective and a batch source satisfying :mod:`mixflow_bench.train.protocols`.
"""

from mixflow_bench.train.checkpoint import export_ema, latest_checkpoint, load_checkpoint, save_checkpoint
from mixflow_bench.train.engine import TrainConfig, TrainResult, train
from mixflow_bench.train.protocols import Batches, TrainingObjective

__all__ = [
    "Batches",
    "TrainConfig",
    "TrainResult",
    "TrainingObjective",
    "export_ema",
    "latest_checkpoint",
    "load_checkpoint",
    "save_checkpoint",
    "train",
]
