"""The built-in velocity samplers of the registry (:mod:`mixflow_bench.samplers`), as recipe-level functions.

Each is ``run(spec, velocity, noise, sample_cfg, step_noise) -> latents``: it integrates ``velocity(x, t)`` (the
model's own time convention, ``spec.convention``) from ``noise`` to the data end with the recipe's settings, on
the core samplers of :mod:`mixflow_bench.flow.samplers`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor

from mixflow_bench.flow import samplers as core
from mixflow_bench.flow.conventions import TimeConvention, resolve_shift
from mixflow_bench.flow.paths import Path as FlowPath
from mixflow_bench.recipes.schema import SampleSection

VelocityFn = Callable[[Tensor, Tensor], Tensor]
StepNoise = Callable[[int], Tensor] | None


def sde(spec: Any, velocity: VelocityFn, noise: Tensor, cfg: SampleSection, step_noise: StepNoise = None) -> Tensor:
    """SiT's Euler-Maruyama (``steps`` NFE, the last step drift-only) on the spec's path (``linear`` or ``gvp``)."""
    path_kind = (getattr(spec, "sampler_defaults", None) or {}).get("path", "linear")
    path = FlowPath(kind=path_kind, convention=TimeConvention(spec.convention))
    return core.euler_maruyama(
        velocity, noise, path, steps=cfg.steps, last_step_size=cfg.last_step_size, noise=step_noise
    )


def euler(spec: Any, velocity: VelocityFn, noise: Tensor, cfg: SampleSection, step_noise: StepNoise = None) -> Tensor:
    """Euler on the uniform grid of ``steps`` steps."""
    return core.euler(velocity, noise, core.uniform_grid(cfg.steps, TimeConvention(spec.convention)))


def heun(spec: Any, velocity: VelocityFn, noise: Tensor, cfg: SampleSection, step_noise: StepNoise = None) -> Tensor:
    """The Heun of the model's family, ``steps`` steps: REPA's (:func:`~mixflow_bench.flow.samplers.repa_heun`)
    on the uniform grid; RAE: torchdiffeq-style Heun on its shifted grid of ``steps + 1`` points; SiT and models
    without a family: torchdiffeq-style Heun on the uniform grid."""
    conv = TimeConvention(spec.convention)
    family = getattr(spec, "family", None)
    if family == "repa":
        return core.repa_heun(velocity, noise, core.uniform_grid(cfg.steps, conv))
    if family == "rae":
        shift = resolve_shift(cfg.time_shift, tuple(spec.latent_shape))
        return core.heun(velocity, noise, core.rae_grid(cfg.steps + 1, shift))
    return core.heun(velocity, noise, core.uniform_grid(cfg.steps, conv))


def dopri5(spec: Any, velocity: VelocityFn, noise: Tensor, cfg: SampleSection, step_noise: StepNoise = None) -> Tensor:
    """Adaptive Dormand-Prince 5(4) from the noise end to the data end (SiT's tolerances)."""
    conv = TimeConvention(spec.convention)
    return core.dopri5(velocity, noise, conv.noise_time, conv.data_time).sample


def rae_euler(
    spec: Any, velocity: VelocityFn, noise: Tensor, cfg: SampleSection, step_noise: StepNoise = None
) -> Tensor:
    """Euler on RAE's shifted grid of ``steps`` points (``DATA_AT_0`` time; ``steps - 1`` evaluations)."""
    shift = resolve_shift(cfg.time_shift, tuple(spec.latent_shape))
    return core.euler(velocity, noise, core.rae_grid(cfg.steps, shift))


def manual_heun(
    spec: Any, velocity: VelocityFn, noise: Tensor, cfg: SampleSection, step_noise: StepNoise = None
) -> Tensor:
    """The κ-FC paper's Heun whose last step is Euler on the uniform grid (``2 steps - 1`` NFE)."""
    grid = core.uniform_grid(cfg.steps, TimeConvention(spec.convention))
    return core.heun(velocity, noise, grid, last_step_euler=True)


def rk45(spec: Any, velocity: VelocityFn, noise: Tensor, cfg: SampleSection, step_noise: StepNoise = None) -> Tensor:
    """The κ-FC paper's adaptive Dormand-Prince 5(4) at rtol = atol = 1e-5."""
    conv = TimeConvention(spec.convention)
    return core.dopri5(velocity, noise, conv.noise_time, conv.data_time, atol=1e-5, rtol=1e-5).sample


def rk45_scipy(
    spec: Any, velocity: VelocityFn, noise: Tensor, cfg: SampleSection, step_noise: StepNoise = None
) -> Tensor:
    """scipy's RK45 at rtol = atol = 1e-5 over the whole batch, the κ-FC paper's measured RK45 row."""
    from mixflow_bench.flow.counted_solvers import rk45_scipy as solve

    conv = TimeConvention(spec.convention)
    return solve(velocity, noise, conv.noise_time, conv.data_time).sample
