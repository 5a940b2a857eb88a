"""Image-generation metrics; :func:`evaluate` runs any registered metric with one evaluator (see .registry)."""

from mixflow_bench.metrics import builtin  # noqa: F401  (registers the built-in evaluators and metrics)
from mixflow_bench.metrics.options import EvalOptions, EvalResult
from mixflow_bench.metrics.registry import (
    Evaluator,
    Metric,
    check_metrics,
    evaluate,
    register_evaluator,
    register_metric,
)

__all__ = ["EvalOptions", "EvalResult", "Evaluator", "Metric", "check_metrics", "evaluate", "register_evaluator",
           "register_metric"]  # fmt: skip
