"""GMFlow (``gmflow``): the network outputs a Gaussian mixture over ``u = eps - x0`` (GM-DiT's head) and is trained
with GMFlow's transition loss (:class:`~mixflow_bench.flow.gmflow.GMFlowObjective`); sampled by the GM samplers.

Recipe settings: ``t_dist`` (``uniform`` or ``logit-normal``), ``label_dropout``, and ``params.trans_ratio``
(lambda; 0.9 the checkerboard, 0.5 ImageNet, 1 the plain GM NLL) and ``params.weight``.
"""

from __future__ import annotations

from typing import Any

from mixflow_bench.methods.registry import Method, register_method


def gmflow_objective(section: Any, spec: Any) -> Any:
    """GMFlow's transition loss with the recipe's time law, label dropout and ``params``."""
    from mixflow_bench.flow.gmflow import GMFlowObjective

    if section.t_dist not in ("uniform", "logit-normal"):
        raise ValueError(f"GMFlow draws times uniform or logit-normal, got t_dist {section.t_dist!r}")
    return GMFlowObjective(
        t_dist=section.t_dist, label_dropout=section.label_dropout, null_label=spec.num_classes, **section.params
    )


METHOD = register_method(
    Method(name="gmflow", objective=gmflow_objective, output="gm", description="GMFlow: Gaussian-mixture flow matching")
)
