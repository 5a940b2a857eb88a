"""What an evaluation takes (:class:`EvalOptions`) and gives (:class:`EvalResult`), shared by the registry, the
evaluators and the metrics."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class EvalResult:
    """What an evaluation produced: metric values by result key, and the settings behind them."""

    metrics: dict[str, float]  # e.g. fid, sfid, is, precision, recall, precision_float32, recall_float32, kid
    num_samples: int
    num_reference_images: int | None
    reference_stats: str
    timings: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    settings: dict[str, object] = field(default_factory=dict)
    weights: dict[str, object] = field(default_factory=dict)  # id, sha256, real_network, source


@dataclass
class EvalOptions:
    """Options of an evaluation; each evaluator and metric reads the ones it knows."""

    device: str | None = None  # None: cuda when available
    batch_size: int | None = None  # None: the evaluator's default
    inception_weights: str | None = None  # a file, or None for the evaluator's default network
    fd_method: str = "auto"  # adm: scipy / eigh / auto (eigh on CUDA)
    tf32: bool = False
    resize: str = "tf1"  # adm: tf1 (ADM/TF1 bilinear inside the graph) or clean (clean-fid's PIL bicubic)
    antialias: bool = True  # torchmetrics: its resize (True: torchmetrics >= 1.8)
    dinov2_weights: str | None = None  # fd-dinov2: a Hugging Face folder or the artifact name
    cache_dir: Path | None = None  # reference statistics cache (None: the default)
    show_progress: bool = True
    net: Any = None  # a ready feature network (tests, benchmarks)
    warn: Callable[[str], None] | None = None  # where warnings go (None: warnings.warn)
    extra: dict[str, Any] = field(default_factory=dict)  # options of metrics registered elsewhere
