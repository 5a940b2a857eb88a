"""Samplers as plain functions of (velocity function, start noise, time grid).

A velocity function is ``velocity(x, t) -> dx/dt`` with ``t`` a (B,) tensor. Every ODE sampler here integrates
``dx/dt`` along the grid it is given, so it works in either time convention as long as the grid and the
velocity use the same one: grids run from the noise end to the data end of that convention. The SDE sampler
needs the path (to turn velocity into score) and works in data-ward time internally.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from mixflow_bench.flow.conventions import TimeConvention, shift_noise_level
from mixflow_bench.flow.paths import Path

VelocityFn = Callable[[Tensor, Tensor], Tensor]


def _t(value: Tensor | float, x: Tensor, guidance_time: float | None = None) -> Tensor:
    """A (B,) time tensor on x's device; it remembers its host value so guidance can test it without a sync.

    ``guidance_time`` is the time at which guidance decides whether it is on (a guidance interval), when a
    sampler decides that at another time than the evaluation's (REPA's Heun: at the start of the step).
    """
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    t = torch.full((x.shape[0],), float(value), device=x.device, dtype=dtype)
    t.host_value = float(value)
    t.guidance_time = float(value) if guidance_time is None else float(guidance_time)
    return t


# --- time grids ----------------------------------------------------------------------------------------------
def uniform_grid(steps: int, convention: TimeConvention, *, eps: float = 0.0) -> Tensor:
    """``steps + 1`` equally spaced times from noise to data in ``convention`` (optionally stopping ``eps`` short)."""
    start = convention.noise_time
    end = convention.data_time + (eps if convention is TimeConvention.DATA_AT_0 else -eps)
    return torch.linspace(start, end, steps + 1, dtype=torch.float64)


def rae_grid(num_points: int = 50, shift: float = 1.0, t_min: float = 0.001) -> Tensor:
    """RAE's grid in ``DATA_AT_0`` time: ``linspace(1, t_min, num_points)``, then shifted.

    50 points give 49 Euler steps ending at ``shift(t_min)`` (0.0069 for s = sqrt(48)): there is no step to 0.
    """
    t = torch.linspace(1.0, t_min, num_points, dtype=torch.float64)
    return shift_noise_level(t, shift)


def sit_sde_grid(steps: int = 250, last_step_size: float = 0.04) -> Tensor:
    """SiT's SDE grid in ``DATA_AT_1`` time: ``linspace(0, 1 - last_step_size, steps)`` (``steps - 1`` steps)."""
    return torch.linspace(0.0, 1.0 - last_step_size, steps, dtype=torch.float64)


# --- ODE samplers --------------------------------------------------------------------------------------------
@torch.no_grad()
def euler(velocity: VelocityFn, x: Tensor, grid: Tensor, *, trajectory: bool = False) -> Tensor | list[Tensor]:
    """Explicit Euler along ``grid``: ``x += (t[i+1] - t[i]) * v(x, t[i])`` (len(grid) - 1 evaluations)."""
    states = [x]
    for t_cur, t_next in zip(grid[:-1].tolist(), grid[1:].tolist()):
        x = x + (t_next - t_cur) * velocity(x, _t(t_cur, x))
        if trajectory:
            states.append(x)
    return states if trajectory else x


@torch.no_grad()
def heun(
    velocity: VelocityFn, x: Tensor, grid: Tensor, *, trajectory: bool = False, last_step_euler: bool = False
) -> Tensor | list[Tensor]:
    """Heun's second-order method along ``grid`` (2 evaluations per step, the last one at the grid's end).

    Step for step torchdiffeq's fixed-grid ``heun2``, which SiT's (and RAE's) transport ODE runs on its grid.
    ``last_step_euler``: the last step is a plain Euler step (``2 * steps - 1`` evaluations), as the κ-FC
    mixed-source paper's Heun.
    """
    states = [x]
    steps = len(grid) - 1
    for i, (t_cur, t_next) in enumerate(zip(grid[:-1].tolist(), grid[1:].tolist())):
        h = t_next - t_cur
        v_cur = velocity(x, _t(t_cur, x))
        x_pred = x + h * v_cur
        if last_step_euler and i == steps - 1:
            x = x_pred
        else:
            x = x + 0.5 * h * (v_cur + velocity(x_pred, _t(t_next, x)))
        if trajectory:
            states.append(x)
    return states if trajectory else x


@torch.no_grad()
def repa_heun(velocity: VelocityFn, x: Tensor, grid: Tensor) -> Tensor:
    """REPA's Heun (its ``euler_sampler`` with ``heun=True``) along ``grid`` (``DATA_AT_0``, noise to data).

    Differs from :func:`heun` in three ways: the state is kept in float64 (each evaluation sees it in ``x``'s
    dtype); the corrector's guidance is on or off as at the *start* of the step (``t_cur`` decides the guidance
    interval for both evaluations); and the last step is a plain Euler step, so ``2 * steps - 1`` evaluations.
    """
    dtype = x.dtype
    state = x.to(torch.float64)
    steps = len(grid) - 1
    for i, (t_cur, t_next) in enumerate(zip(grid[:-1].tolist(), grid[1:].tolist())):
        h = t_next - t_cur
        d_cur = velocity(state.to(dtype), _t(t_cur, x)).to(torch.float64)
        x_next = state + h * d_cur
        if i < steps - 1:
            d_prime = velocity(x_next.to(dtype), _t(t_next, x, guidance_time=t_cur)).to(torch.float64)
            x_next = state + h * (0.5 * d_cur + 0.5 * d_prime)
        state = x_next
    return state.to(dtype)


@dataclass
class AdaptiveResult:
    sample: Tensor
    evaluations: int


@torch.no_grad()
def dopri5(
    velocity: VelocityFn, x: Tensor, t_start: float, t_end: float, *, atol: float = 1e-6, rtol: float = 1e-3
) -> AdaptiveResult:
    """Adaptive Dormand-Prince 5(4) from ``t_start`` to ``t_end`` through torchdiffeq (SiT's ODE default)."""
    from torchdiffeq import odeint

    count = 0

    def func(t: Tensor, state: Tensor) -> Tensor:
        nonlocal count
        count += 1
        return velocity(state, _t(float(t), state))

    times = torch.tensor([t_start, t_end], dtype=x.dtype, device=x.device)
    out = odeint(func, x, times, method="dopri5", atol=atol, rtol=rtol)
    return AdaptiveResult(sample=out[-1], evaluations=count)


# --- SDE sampler ---------------------------------------------------------------------------------------------
@torch.no_grad()
def euler_maruyama(
    velocity: VelocityFn,
    x: Tensor,
    path: Path,
    *,
    steps: int = 250,
    last_step_size: float = 0.04,
    diffusion_norm: float = 1.0,
    generator: torch.Generator | None = None,
    noise: Callable[[int], Tensor] | None = None,
) -> Tensor:
    """SiT's Euler-Maruyama SDE sampler with diffusion ``w_t = norm * sigma_t`` and a final 'Mean' step.

    In data-ward time tau on ``linspace(0, 1 - last_step_size, steps)``: ``steps - 1`` stochastic steps
    ``x += (v + w s) dtau + sqrt(2 w dtau) z`` with score ``s`` from the velocity, then one drift-only step of
    ``last_step_size`` (``steps`` evaluations in all). ``velocity`` and ``path`` use the model's convention.
    ``noise(i)`` may supply the Gaussian of step i (for per-sample seeding); by default it comes from ``generator``.
    """
    conv = path.convention
    grid = sit_sde_grid(steps, last_step_size)
    dtau = float(grid[1] - grid[0])

    def drift(state: Tensor, tau: float) -> Tensor:
        t = _t(conv.from_data_ward(tau), state)
        v = velocity(state, t)
        score = path.score_from_velocity(state, v, t)
        w = diffusion_norm * float(path.sigma(torch.tensor(conv.from_data_ward(tau), dtype=torch.float64)))
        return conv.velocity_sign * v + w * score, w

    for i, tau in enumerate(grid[:-1].tolist()):
        d, w = drift(x, tau)
        z = noise(i) if noise is not None else torch.randn(x.shape, generator=generator, device="cpu")
        x = x + d * dtau + (2.0 * w * dtau) ** 0.5 * z.to(device=x.device, dtype=x.dtype)
    d, _ = drift(x, float(grid[-1]))
    return x + d * last_step_size
