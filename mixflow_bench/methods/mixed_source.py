"""The κ-FC mixed source (``mixed-source``): flow matching from a mixture of N(0, I) and a learned source
conditioned on κ (:mod:`mixflow_bench.flow.mixed_source`); sampling starts from N(0, I).

Recipe settings (``params``): ``variant`` (``mixed-source``, ``mixed-source-rv``, ``fast-ode``,
``rectified-flow``), ``beta`` (the KL weight) and ``kappa`` (``image``, ``class``, ``noise``). The objective
needs a model with a source network (:class:`~mixflow_bench.flow.mixed_source.MixedSourceModel`) unless the
variant is ``rectified-flow``.
"""

from __future__ import annotations

from typing import Any

from mixflow_bench.methods.registry import Method, register_method


def mixed_source_objective(section: Any, spec: Any) -> Any:
    """The mixed-source objective of ``params.variant`` with its KL weight and κ."""
    from mixflow_bench.flow.mixed_source import mixed_source_method

    params = dict(section.params)
    return mixed_source_method(params.pop("variant", "mixed-source"), **params)


METHOD = register_method(
    Method(
        name="mixed-source",
        objective=mixed_source_objective,
        source="learned",
        description="κ-FC mixed source distributions for rectified flows",
    )
)
