"""GMFlow (Gaussian-mixture flow matching): GM algebra, losses, solvers, probabilistic guidance, heads.

GMFlow works in :attr:`TimeConvention.DATA_AT_0` time on the linear path (t = 0 data, t = 1 noise,
``u = eps - x0``); every function here says so. Methods and solvers are registered by name so that recipes
and studies can pick them: ``OBJECTIVES`` (training) and ``SOLVERS`` (sampling).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from mixflow_bench.flow.conventions import TimeConvention
from mixflow_bench.flow.gmflow.guidance import (
    GM2_DAMPING,
    check_guidance_scale,
    guidance_bias,
    probabilistic_guidance,
    second_order_reweight,
)
from mixflow_bench.flow.gmflow.heads import GMFlowToyMLP, GMOutputHead
from mixflow_bench.flow.gmflow.losses import GMFlowObjective, gm_nll
from mixflow_bench.flow.gmflow.mixture import (
    GaussianMixture,
    IsoGaussian,
    gaussian_product,
    gaussian_ratio,
)
from mixflow_bench.flow.gmflow.solvers import ddpm, default_substeps, gm_ode, gm_sde, gmflow_grid
from mixflow_bench.flow.gmflow.transitions import (
    convert_to_time,
    forward_transition,
    reverse_transition,
    transition_coefficients,
    u_to_x0,
)

CONVENTION = TimeConvention.DATA_AT_0

OBJECTIVES: dict[str, Callable[..., GMFlowObjective]] = {
    "gmflow": GMFlowObjective,  # transition loss, lambda = trans_ratio (0.9 toy, 0.5 ImageNet)
    "gmflow-nll": functools.partial(GMFlowObjective, trans_ratio=1.0),  # plain GM NLL (lambda = 1)
}

SOLVERS: dict[str, dict] = {
    "gm-sde": {"fn": gm_sde, "order": 1},
    "gm-sde2": {"fn": gm_sde, "order": 2},
    "gm-ode": {"fn": gm_ode, "order": 1},
    "gm-ode2": {"fn": gm_ode, "order": 2},
}

__all__ = [
    "CONVENTION",
    "GM2_DAMPING",
    "OBJECTIVES",
    "SOLVERS",
    "GMFlowObjective",
    "GMFlowToyMLP",
    "GMOutputHead",
    "GaussianMixture",
    "IsoGaussian",
    "check_guidance_scale",
    "convert_to_time",
    "ddpm",
    "default_substeps",
    "forward_transition",
    "gaussian_product",
    "gaussian_ratio",
    "gm_nll",
    "gm_ode",
    "gm_sde",
    "gmflow_grid",
    "guidance_bias",
    "probabilistic_guidance",
    "reverse_transition",
    "second_order_reweight",
    "transition_coefficients",
    "u_to_x0",
]
