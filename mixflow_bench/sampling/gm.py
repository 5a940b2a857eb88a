"""Recipe sampling for GM models (GMFlow): GM-SDE / GM-ODE (1st, 2nd order) with probabilistic guidance.

A GM model is called as ``model(x, t, y) -> GaussianMixture`` over ``u = eps - x0`` with ``t`` in
:attr:`TimeConvention.DATA_AT_0`. Guidance evaluates the conditional and the null-label halves in one batch.
Per-sample step noise keeps the sampling resumable shard by shard: GM-SDE step ``i`` uses draws ``3i`` (the
transition noise), ``3i + 1`` (the x0 draw's Gaussian) and ``3i + 2`` (its first channel, through the normal
CDF, picks the component).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from mixflow_bench.flow.gmflow import SOLVERS, GaussianMixture, default_substeps, gmflow_grid
from mixflow_bench.recipes.schema import SampleSection


def gm_function(model: nn.Module, y: Tensor, sample_cfg: SampleSection, null_label: int):
    """``(x, t) -> GM`` (or ``(conditional, unconditional)`` under probabilistic guidance) in float32."""
    g = sample_cfg.guidance
    if g.kind not in ("none", "probabilistic"):
        raise ValueError(f"GM samplers take guidance 'none' or 'probabilistic', not {g.kind!r}")
    as_fp32 = lambda gm: gm.map(lambda v: v.float())  # noqa: E731
    if g.kind == "none" or g.scale == 0.0:
        return lambda x, t: as_fp32(model(x, t, y))
    y_null = torch.full_like(y, null_label)

    def pair(x: Tensor, t: Tensor) -> tuple[GaussianMixture, GaussianMixture]:
        out = as_fp32(model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, y_null])))
        n = len(x)
        return out.map(lambda v: v[:n]), out.map(lambda v: v[n:])

    return pair


def integrate_gm(
    spec, model: nn.Module, y: Tensor, noise: Tensor, sample_cfg: SampleSection, step_noise: Callable[[int], Tensor]
) -> Tensor:
    """Latents of the recipe's GM sampler from ``noise`` (``steps`` network evaluations)."""
    if sample_cfg.sampler not in SOLVERS:
        raise ValueError(f"unknown GM sampler {sample_cfg.sampler!r} (expected one of {', '.join(SOLVERS)})")
    solver = SOLVERS[sample_cfg.sampler]
    g = sample_cfg.guidance
    scale = g.scale if g.kind == "probabilistic" else 0.0
    gm_fn = gm_function(model, y, sample_cfg, spec.num_classes)
    x = noise.float()
    if sample_cfg.sampler.startswith("gm-sde"):

        def sample_x0(gm: GaussianMixture, i: int) -> Tensor:
            z = step_noise(3 * i + 2).to(x)
            uniform = 0.5 * (1 + torch.erf(z[:, 0] / math.sqrt(2))).reshape(-1, 1)
            return gm.sample_from(uniform, step_noise(3 * i + 1).to(x))

        return solver["fn"](
            gm_fn, x, gmflow_grid(sample_cfg.steps), order=solver["order"], guidance_scale=scale,
            orthogonal=g.orthogonal, sample_x0=sample_x0, noise=lambda i: step_noise(3 * i),
        )  # fmt: skip
    n = sample_cfg.substeps or default_substeps(sample_cfg.steps, images=True)
    return solver["fn"](
        gm_fn, x, gmflow_grid(sample_cfg.steps * n), substeps=n, order=solver["order"], guidance_scale=scale,
        orthogonal=g.orthogonal,
    )  # fmt: skip
