"""Flow matching (``fm``): regress the path's velocity at the time the network is told.

Also the shared builder of :mod:`mixflow_bench.methods.mixflow`, which only adds the slowed interpolation.
"""

from __future__ import annotations

from typing import Any

from mixflow_bench.methods.registry import Method, register_method


def flow_matching_objective(section: Any, spec: Any, *, mixture: str | None = None) -> Any:
    """:class:`~mixflow_bench.flow.objectives.FlowMatching` on the model's path and convention, with the recipe's
    time law, shift, target and label dropout; ``mixture``: MixFlow's slowed interpolation (None: plain FM)."""
    from mixflow_bench.flow import FlowMatching
    from mixflow_bench.flow import Path as FlowPath
    from mixflow_bench.flow.conventions import TimeConvention, resolve_shift

    shift = resolve_shift(section.time_shift, tuple(spec.latent_shape)) if section.time_shift is not None else None
    return FlowMatching(
        path=FlowPath(kind=section.path, convention=TimeConvention(spec.convention)),
        t_dist=section.t_dist,
        mixture=mixture,
        gamma=section.gamma,
        target=section.target,
        time_shift=shift,
        label_dropout=section.label_dropout,
        null_label=spec.num_classes,
    )


METHOD = register_method(
    Method(name="fm", objective=flow_matching_objective, description="flow matching (SiT, REPA, RAE training)")
)
