"""Every metric and evaluator by name: the one list that recipes, ``mixflow-bench eval`` and the pipeline read.

An *evaluator* is a feature network with its preprocessing and protocol: ``adm`` (ADM's TF-2015 Inception
pipeline, :mod:`mixflow_bench.metrics.adm`) or ``torchmetrics`` (the κ-FC paper's torchmetrics FID,
:mod:`mixflow_bench.metrics.torchmetrics_fid`). A *metric* is either computed inside an evaluator's pass
(``Metric.evaluators``) or on its own (``Metric.compute``: FD-DINOv2, the toy data-space FD). :func:`evaluate`
runs any list of metrics with one evaluator; :func:`register_metric` / :func:`register_evaluator` add more, which
every entry point then accepts.

This module imports nothing heavy: recipe validation reads it without loading torch.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
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


MetricFn = Callable[[Path, "Path | str", EvalOptions], dict[str, float]]
EvaluatorFn = Callable[[Path, Path, tuple[str, ...], EvalOptions], EvalResult]


@dataclass(frozen=True)
class Metric:
    """A metric: its name in recipes and on the command line, its result keys and who computes it."""

    name: str
    label: str  # for tables
    keys: tuple[str, ...]  # keys of its values in EvalResult.metrics
    evaluators: tuple[str, ...] = ()  # evaluators whose feature pass computes it
    compute: MetricFn | None = None  # standalone: (samples npz, reference, options) -> {key: value}
    reference: str = "images"  # images: an npz/folder/artifact of images; name: passed on as given (toy data)
    artifacts: tuple[str, ...] = ()  # artifacts it needs by default
    aliases: tuple[str, ...] = ()
    description: str = ""


@dataclass(frozen=True)
class Evaluator:
    """A feature network with its preprocessing: ``run(samples, reference, metric names, options)``."""

    name: str
    description: str
    run: EvaluatorFn
    artifacts: tuple[str, ...] = ()  # its default network's weights (not needed with inception_weights)
    aliases: tuple[str, ...] = ()


METRICS: dict[str, Metric] = {}
EVALUATORS: dict[str, Evaluator] = {}
DEFAULT_EVALUATOR = "adm"


def register_metric(metric: Metric) -> Metric:
    """Adds ``metric`` (by name) to the list that recipes, the CLI and the pipeline accept."""
    if metric.compute is None and not metric.evaluators:
        raise ValueError(f"metric {metric.name!r}: needs a compute function or the evaluators that compute it")
    METRICS[metric.name] = metric
    return metric


def register_evaluator(evaluator: Evaluator) -> Evaluator:
    EVALUATORS[evaluator.name] = evaluator
    return evaluator


def metric_names() -> tuple[str, ...]:
    return tuple(METRICS)


def evaluator_names() -> tuple[str, ...]:
    return tuple(EVALUATORS)


def resolve_evaluator(name: str) -> Evaluator:
    for ev in EVALUATORS.values():
        if name == ev.name or name in ev.aliases:
            return ev
    raise ValueError(f"unknown evaluator {name!r}; choose from {', '.join(EVALUATORS)}")


def _metric_alias(name: str) -> list[str]:
    key = name.strip().lower()
    if key in METRICS:
        return [key]
    if key == "pr":  # precision and recall
        return ["prec", "rec"]
    for m in METRICS.values():
        if key in m.aliases or key == m.name.replace("-", "_"):
            return [m.name]
    raise ValueError(f"unknown metric {name.strip()!r}; choose from {', '.join(METRICS)}")


def check_metrics(spec: str | Sequence[str], evaluator: str = DEFAULT_EVALUATOR) -> tuple[str, ...]:
    """``"fid,sfid"`` or a list (any order, aliases allowed) -> the metric names in registry order.

    Raises ValueError with one line: an unknown metric, or one that ``evaluator`` does not compute."""
    items = [s for s in (spec.split(",") if isinstance(spec, str) else spec) if str(s).strip()]
    if not items:
        raise ValueError(f"no metrics given; choose from {', '.join(METRICS)}")
    names = {n for s in items for n in _metric_alias(str(s))}
    ev = resolve_evaluator(evaluator)
    for n in names:
        m = METRICS[n]
        if m.compute is None and ev.name not in m.evaluators:
            able = [e for e in EVALUATORS if e in m.evaluators]
            raise ValueError(
                f"the {ev.name} evaluator does not compute {n}; evaluators that do: {', '.join(able) or 'none'}"
            )
    refs = {METRICS[n].reference for n in names}
    if len(refs) > 1:
        raise ValueError(f"{', '.join(sorted(names))}: metrics on image references and on named data sets cannot "
                         "share one reference; evaluate them separately")  # fmt: skip
    return tuple(n for n in METRICS if n in names)


def artifacts_for(
    metrics: Sequence[str], evaluator: str = DEFAULT_EVALUATOR, inception_weights: str | None = None,
    dinov2_weights: str | None = None,
) -> list[str]:  # fmt: skip
    """The artifacts an evaluation of ``metrics`` fetches by default (the evaluator's network, FD-DINOv2's)."""
    names = check_metrics(metrics, evaluator)
    ev = resolve_evaluator(evaluator)
    out: dict[str, None] = {}
    if any(METRICS[n].compute is None for n in names) and not inception_weights:
        out.update(dict.fromkeys(ev.artifacts))
    for n in names:
        if n == "fd-dinov2" and dinov2_weights:
            continue
        out.update(dict.fromkeys(METRICS[n].artifacts))
    return list(out)


def evaluate(
    samples: str | os.PathLike,
    reference: str | os.PathLike,
    metrics: str | Sequence[str] = ("fid", "sfid", "is", "prec", "rec"),
    evaluator: str = DEFAULT_EVALUATOR,
    **options: Any,
) -> EvalResult:
    """Evaluates ``samples`` against ``reference`` with any registered metrics and one evaluator.

    ``samples``: an npz (``arr_0`` uint8 N×H×W×3) or a folder of PNG/JPEG images. ``reference``: an npz (an ADM
    reference batch or images), a folder of images (packed once into the statistics cache, keyed by content), an
    artifact name (``adm-ref-imagenet256``), or a data-set name for metrics on named references (``fd-data``).
    ``options``: the fields of :class:`EvalOptions`. Bad inputs raise ValueError/OSError with one line, before
    any image goes through a network."""
    from mixflow_bench.metrics.inputs import image_inputs

    opts = EvalOptions(**options)
    names = check_metrics(metrics, evaluator)
    ev = resolve_evaluator(evaluator)
    in_pass = tuple(n for n in names if METRICS[n].compute is None)
    alone = [n for n in names if METRICS[n].compute is not None]
    by_name = all(METRICS[n].reference == "name" for n in names)
    with image_inputs(samples, None if by_name else reference, opts) as (smp, ref):
        if in_pass:
            result = ev.run(smp, ref, in_pass, opts)
        else:
            from mixflow_bench.metrics.npz_stream import NpzImageReader

            with NpzImageReader(smp) as reader:
                count = reader.num_images
            result = EvalResult({}, count, None, "none", settings={"evaluator": ev.name})
        for n in alone:
            result.metrics.update(METRICS[n].compute(smp, reference if by_name else ref, opts))
    result.metrics = {k: result.metrics[k] for n in names for k in METRICS[n].keys if k in result.metrics}
    return result


# --- the built-in evaluators and metrics ----------------------------------------------------------------------
def _run_adm(samples: Path, reference: Path, metrics: tuple[str, ...], opts: EvalOptions) -> EvalResult:
    from mixflow_bench.metrics.adm import evaluate_adm
    from mixflow_bench.metrics.inputs import weights_file

    return evaluate_adm(
        samples, reference, metrics, net=opts.net, weights=weights_file(opts.inception_weights), device=opts.device,
        batch_size=opts.batch_size, fd_method=opts.fd_method, cache_dir=opts.cache_dir, tf32=opts.tf32,
        resize=opts.resize, show_progress=opts.show_progress, warn=opts.warn,
    )  # fmt: skip


def _run_torchmetrics(samples: Path, reference: Path, metrics: tuple[str, ...], opts: EvalOptions) -> EvalResult:
    from mixflow_bench.metrics.torchmetrics_fid import run_evaluator

    return run_evaluator(samples, reference, metrics, opts)


def _fd_dinov2(samples: Path, reference: Path | str, opts: EvalOptions) -> dict[str, float]:
    from mixflow_bench.hub.registry import FD_DINOV2_ARTIFACT
    from mixflow_bench.metrics.dinov2 import fd_dinov2

    device = opts.device or _default_device()
    weights = opts.dinov2_weights or FD_DINOV2_ARTIFACT
    return {"fd_dinov2": fd_dinov2(samples, reference, weights, device, opts.batch_size or 100)}


def _fd_data(samples: Path, reference: Path | str, opts: EvalOptions) -> dict[str, float]:
    from mixflow_bench.metrics.data_fd import fd_data

    return {"fd-data": fd_data(samples, str(reference))}


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


_INCEPTION = ("inception-torch-fidelity",)  # hub.registry.INCEPTION_ARTIFACT (not imported: keeps this light)
register_evaluator(Evaluator(
    "adm", "OpenAI's ADM evaluator re-implemented on torch-fidelity's Inception (float32)", _run_adm, _INCEPTION))
register_evaluator(Evaluator(
    "torchmetrics", "torchmetrics FrechetInceptionDistance(normalize=True), as the κ-FC paper runs it",
    _run_torchmetrics, _INCEPTION, aliases=("torchmetrics-train",)))
_ADM = ("adm",)
register_metric(Metric("fid", "FID", ("fid",), ("adm", "torchmetrics"), description="Fréchet Inception distance"))
register_metric(Metric("sfid", "sFID", ("sfid",), _ADM, description="Fréchet distance of mixed_6/conv features"))
register_metric(Metric("is", "Inception Score", ("is",), _ADM, aliases=("inception_score", "isc")))
register_metric(Metric("prec", "Precision", ("precision", "precision_float32"), _ADM, aliases=("precision",)))
register_metric(Metric("rec", "Recall", ("recall", "recall_float32"), _ADM, aliases=("recall",)))
register_metric(Metric("kid", "KID", ("kid", "kid_std"), _ADM,
                       description="kernel Inception distance (torch-fidelity's: cubic polynomial kernel, subsets)"))
register_metric(Metric("fd-dinov2", "FD-DINOv2", ("fd_dinov2",), compute=_fd_dinov2, artifacts=("dinov2-vit-l",),
                       description="Fréchet distance of DINOv2 ViT-L/14 features"))
register_metric(Metric("fd-data", "FD (data)", ("fd-data",), compute=_fd_data, reference="name",
                       description="data-space Fréchet distance against held-out toy data (digits-heldout)"))

__all__ = ["EVALUATORS", "METRICS", "EvalOptions", "EvalResult", "Evaluator", "Metric", "artifacts_for",
           "check_metrics", "evaluate", "evaluator_names", "metric_names", "register_evaluator", "register_metric",
           "resolve_evaluator"]  # fmt: skip
