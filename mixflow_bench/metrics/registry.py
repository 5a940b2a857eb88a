"""Every metric and evaluator by name: the one list that recipes, ``mixflow-bench eval`` and the pipeline read.

An *evaluator* is a feature network with its preprocessing and protocol: ``adm`` (ADM's TF-2015 Inception
pipeline, :mod:`mixflow_bench.metrics.adm`) or ``torchmetrics`` (the κ-FC paper's torchmetrics FID,
:mod:`mixflow_bench.metrics.torchmetrics_fid`). A *metric* is either computed inside an evaluator's pass
(``Metric.evaluators``) or on its own (``Metric.compute``: FD-DINOv2, the toy data-space FD). :func:`evaluate`
runs any list of metrics with one evaluator; :func:`register_metric` / :func:`register_evaluator` add more, which
every entry point then accepts.

This module imports no implementation: the built-in entries are registered by :mod:`mixflow_bench.metrics.builtin`
when the package is imported, and recipe validation reads the tables without loading torch.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mixflow_bench.metrics.options import EvalOptions, EvalResult
from mixflow_bench.registry import Registry

MetricFn = Callable[[Path, Path, EvalOptions], dict[str, float]]
EvaluatorFn = Callable[[Path, Path, tuple[str, ...], EvalOptions], EvalResult]


@dataclass(frozen=True)
class Metric:
    """A metric: its name in recipes and on the command line, its result keys and who computes it."""

    name: str
    label: str  # for tables
    keys: tuple[str, ...]  # keys of its values in EvalResult.metrics
    evaluators: tuple[str, ...] = ()  # evaluators whose feature pass computes it
    compute: MetricFn | None = None  # standalone: (samples npz, reference npz, options) -> {key: value}
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


METRICS: Registry[Metric] = Registry("metric")
EVALUATORS: Registry[Evaluator] = Registry("evaluator")
DEFAULT_EVALUATOR = "adm"


def register_metric(metric: Metric) -> Metric:
    """Adds ``metric`` (by name) to the list that recipes, the CLI and the pipeline accept."""
    if metric.compute is None and not metric.evaluators:
        raise ValueError(f"metric {metric.name!r}: needs a compute function or the evaluators that compute it")
    return METRICS.register(metric.name, metric)


def register_evaluator(evaluator: Evaluator) -> Evaluator:
    return EVALUATORS.register(evaluator.name, evaluator)


def metric_names() -> tuple[str, ...]:
    return METRICS.names()


def evaluator_names() -> tuple[str, ...]:
    return EVALUATORS.names()


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
    reference batch or images), a folder of images (packed once into the statistics cache, keyed by content) or
    an artifact name (``adm-ref-imagenet256``); toy data sets by name: :func:`mixflow_bench.data.toy.
    resolve_toy_reference`.
    ``options``: the fields of :class:`EvalOptions`. Bad inputs raise ValueError/OSError with one line, before
    any image goes through a network."""
    from mixflow_bench.metrics.inputs import image_inputs

    opts = EvalOptions(**options)
    names = check_metrics(metrics, evaluator)
    ev = resolve_evaluator(evaluator)
    in_pass = tuple(n for n in names if METRICS[n].compute is None)
    alone = [n for n in names if METRICS[n].compute is not None]
    with image_inputs(samples, reference, opts) as (smp, ref):
        if in_pass:
            result = ev.run(smp, ref, in_pass, opts)
        else:
            from mixflow_bench.metrics.npz_stream import NpzImageReader

            with NpzImageReader(smp) as reader:
                count = reader.num_images
            result = EvalResult({}, count, None, "none", settings={"evaluator": ev.name})
        for n in alone:
            result.metrics.update(METRICS[n].compute(smp, ref, opts))
    result.metrics = {k: result.metrics[k] for n in names for k in METRICS[n].keys if k in result.metrics}
    return result


__all__ = ["EVALUATORS", "METRICS", "EvalOptions", "EvalResult", "Evaluator", "Metric", "artifacts_for",
           "check_metrics", "evaluate", "evaluator_names", "metric_names", "register_evaluator", "register_metric",
           "resolve_evaluator"]  # fmt: skip
