"""MixFlow (``mixflow``): flow matching whose network input comes from a slowed time ``m <= tau`` (the recipe's
``mixture`` and ``gamma``); the network is still told ``tau`` (:mod:`mixflow_bench.flow.objectives`)."""

from __future__ import annotations

from typing import Any

from mixflow_bench.methods.fm import flow_matching_objective
from mixflow_bench.methods.registry import Method, register_method


def mixflow_objective(section: Any, spec: Any) -> Any:
    """Flow matching with the slowed interpolation mixture of ``section.mixture``."""
    return flow_matching_objective(section, spec, mixture=section.mixture)


METHOD = register_method(
    Method(name="mixflow", objective=mixflow_objective, description="MixFlow slowed-interpolation post-training")
)
