"""Image-generation metrics; :func:`evaluate` runs any registered metric with one evaluator (see .registry)."""

from mixflow_bench.metrics.registry import (
    EvalOptions,
    EvalResult,
    Evaluator,
    Metric,
    check_metrics,
    evaluate,
    register_evaluator,
    register_metric,
)

__all__ = ["EvalOptions", "EvalResult", "Evaluator", "Metric", "check_metrics", "evaluate", "register_evaluator",
           "register_metric"]  # fmt: skip
