"""Analyses of trained flow models: the Slow-Flow curve (nearest ground-truth interpolation time)."""

from mixflow_bench.analysis.slow_flow import (
    analyze,
    nearest_interpolation,
    nearest_interpolation_time,
    null_curve,
    plot_slow_flow,
    slow_flow_curve,
    summarize,
)

__all__ = [
    "analyze",
    "nearest_interpolation",
    "nearest_interpolation_time",
    "null_curve",
    "plot_slow_flow",
    "slow_flow_curve",
    "summarize",
]
