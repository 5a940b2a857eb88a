"""GM-SDE and GM-ODE solvers (first and second order) and DDPM small/large, as plain functions.

Times are :attr:`TimeConvention.DATA_AT_0` (t = 1 noise, t = 0 data) on the linear path; grids run from 1 to
0. A GM function is ``gm_fn(x, t) -> GaussianMixture`` over the velocity ``u = eps - x0`` with ``t`` a (B,)
tensor; with probabilistic guidance it returns the pair ``(conditional, unconditional)``.

* GM-SDE: per network step, draw ``x0`` from the (guided, reweighted) x0-GM and take the exact reverse
  transition ``x <- c1 x + c2 x0 + sqrt(c3) z`` (Eq. 9).
* GM-ODE: per network step, ``n`` Euler sub-steps ``x <- x + (t' - t)(x - x0_hat)/t`` where ``x0_hat`` is the
  mean of the step's GM converted to the sub-step's ``(x, t)`` (Eq. 10): no extra network evaluations.
* Second order (``order=2``): the Adams-Bashforth-style reweighting of
  :func:`~mixflow_bench.flow.gmflow.guidance.second_order_reweight` before the step.
* DDPM small / large: the K = 1, ``s = 0`` special case of the GM-SDE step with the small or large variance.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from mixflow_bench.flow.gmflow.guidance import (
    GM2_DAMPING,
    check_guidance_scale,
    probabilistic_guidance,
    second_order_reweight,
)
from mixflow_bench.flow.gmflow.mixture import EPS, GaussianMixture
from mixflow_bench.flow.gmflow.transitions import convert_to_time, reverse_step, transition_coefficients, u_to_x0

GMFn = Callable[[Tensor, Tensor], "GaussianMixture | tuple[GaussianMixture, GaussianMixture]"]
VelocityFn = Callable[[Tensor, Tensor], Tensor]


def gmflow_grid(steps: int, shift: float = 1.0) -> Tensor:
    """DATA_AT_0 grid ``1 - linspace(0, 1, steps, endpoint=False)``, time-shifted, with 0 appended (float64)."""
    if steps <= 0:
        raise ValueError(f"the number of steps must be positive, got {steps}")
    t = 1.0 - torch.arange(steps, dtype=torch.float64) / steps
    t = shift * t / (1.0 + (shift - 1.0) * t)
    return torch.cat([t, torch.zeros(1, dtype=torch.float64)])


def default_substeps(nfe: int, *, images: bool = False) -> int:
    """The paper's GM-ODE sub-steps per network step: ``ceil(128 / NFE)`` on the 2-D toy; on images at least 2,
    and 8 at NFE 4 and 6 (GMFlow §4.2: 8 sub-steps there rather than 32 and 22)."""
    if nfe <= 0:
        raise ValueError(f"NFE must be positive, got {nfe}")
    n = math.ceil(128 / nfe)
    if not images:
        return n
    return 8 if nfe in (4, 6) else max(n, 2)


def _t(value: float, x: Tensor) -> Tensor:
    t = torch.full((x.shape[0],), float(value), device=x.device, dtype=x.dtype)
    t.host_value = float(value)
    return t


class _GMStepper:
    """Turns the network's u-GM at ``(x, t)`` into the x0-GM the step uses (guidance, second order)."""

    def __init__(self, gm_fn: GMFn, order: int, guidance_scale: float, orthogonal: float, damping: float):
        if order not in (1, 2):
            raise ValueError(f"order must be 1 or 2, got {order}")
        self.gm_fn, self.order, self.orthogonal, self.damping = gm_fn, order, orthogonal, damping
        self.scale = check_guidance_scale(guidance_scale)
        self.prev: tuple[GaussianMixture, Tensor, float, float] | None = None  # (gm, x, t, h)

    def __call__(self, x: Tensor, t: float, h: float) -> GaussianMixture:
        out = self.gm_fn(x, _t(t, x))
        guided = None
        if self.scale > 0.0:
            if isinstance(out, GaussianMixture):
                raise ValueError("probabilistic guidance needs gm_fn to return (conditional, unconditional)")
            cond, uncond = (u_to_x0(g, x, t) for g in out)
            guided = probabilistic_guidance(cond, uncond, self.scale, orthogonal=self.orthogonal)
            gm = guided.gm
        else:
            gm = u_to_x0(out if isinstance(out, GaussianMixture) else out[0], x, t)
        if self.order == 2:
            prev, self.prev = self.prev, (gm, x, t, h)
            if prev is not None:
                prev_gm, prev_x, prev_t, prev_h = prev
                mean_from_prev = convert_to_time(prev_gm, prev_x, prev_t, x, t).mean()
                gm = second_order_reweight(
                    gm, mean_from_prev, h, prev_h, guided=guided, guidance_scale=self.scale, damping=self.damping
                )
        return gm


def _check_grid(grid: Tensor, substeps: int) -> list[float]:
    times = [float(v) for v in grid]
    if len(times) < 2:
        raise ValueError("a grid needs at least two times (NFE >= 1)")
    if (len(times) - 1) % substeps:
        raise ValueError(f"grid of {len(times) - 1} steps is not a multiple of {substeps} sub-steps")
    return times


@torch.no_grad()
def gm_sde(
    gm_fn: GMFn,
    x: Tensor,
    grid: Tensor,
    *,
    order: int = 1,
    guidance_scale: float = 0.0,
    orthogonal: float = 1.0,
    damping: float = GM2_DAMPING,
    generator: torch.Generator | None = None,
    sample_x0: Callable[[GaussianMixture, int], Tensor] | None = None,
    noise: Callable[[int], Tensor] | None = None,
    trajectory: bool = False,
) -> Tensor | list[Tensor]:
    """GM-SDE (``order=1``) or GM-SDE 2 along a DATA_AT_0 ``grid`` (len(grid) - 1 network evaluations).

    ``sample_x0(gm, i)`` and ``noise(i)`` may supply the draws of step ``i`` (per-sample seeding, parity);
    by default both come from ``generator``.
    """
    times = _check_grid(grid, 1)
    stepper = _GMStepper(gm_fn, order, guidance_scale, orthogonal, damping)
    states = [x]
    for i, (t, t_to) in enumerate(zip(times[:-1], times[1:])):
        gm = stepper(x, t, t - t_to)
        x0 = sample_x0(gm, i) if sample_x0 is not None else gm.sample(generator)
        z = noise(i) if noise is not None else torch.randn(x.shape, generator=generator, device="cpu")
        x = reverse_step(x0.to(x.dtype), x, t, t_to, z.to(device=x.device, dtype=x.dtype))
        if trajectory:
            states.append(x)
    return states if trajectory else x


@torch.no_grad()
def gm_ode(
    gm_fn: GMFn,
    x: Tensor,
    grid: Tensor,
    *,
    substeps: int,
    order: int = 1,
    guidance_scale: float = 0.0,
    orthogonal: float = 1.0,
    damping: float = GM2_DAMPING,
    trajectory: bool = False,
) -> Tensor | list[Tensor]:
    """GM-ODE (``order=1``) or GM-ODE 2 with ``substeps`` Euler sub-steps per network evaluation.

    ``grid`` is the *fine* DATA_AT_0 grid (``NFE * substeps + 1`` times, e.g. ``gmflow_grid(NFE * n)``); the
    network is evaluated at every ``substeps``-th time.
    """
    if substeps <= 0:
        raise ValueError(f"substeps must be positive, got {substeps}")
    times = _check_grid(grid, substeps)
    nfe = (len(times) - 1) // substeps
    stepper = _GMStepper(gm_fn, order, guidance_scale, orthogonal, damping)
    states = [x]
    for i in range(nfe):
        t_base = times[i * substeps]
        h = t_base - times[(i + 1) * substeps]
        gm = stepper(x, t_base, h)
        x_base = x
        for j in range(substeps):
            t, t_next = times[i * substeps + j], times[i * substeps + j + 1]
            x0 = gm.mean() if j == 0 else convert_to_time(gm, x_base, t_base, x, t).mean()
            x = x + (t_next - t) * (x - x0) / t
        if trajectory:
            states.append(x)
    return states if trajectory else x


@torch.no_grad()
def ddpm(
    velocity: VelocityFn,
    x: Tensor,
    grid: Tensor,
    *,
    variance: str = "small",
    generator: torch.Generator | None = None,
    noise: Callable[[int], Tensor] | None = None,
) -> Tensor:
    """DDPM on a flow model: ``x0 = x - t u(x, t)``, then the Gaussian reverse step (DATA_AT_0 ``grid``).

    ``small``: variance ``c3`` (the K = 1, s = 0 GM-SDE; DDIM eta = 1). ``large``: ``beta (alpha_to^2 +
    sigma_to^2) / (alpha^2 + sigma^2)``.
    """
    if variance not in ("small", "large"):
        raise ValueError(f"variance must be 'small' or 'large', got {variance!r}")
    times = _check_grid(grid, 1)
    for i, (t, t_to) in enumerate(zip(times[:-1], times[1:])):
        x0 = x - t * velocity(x, _t(t, x))
        z = noise(i) if noise is not None else torch.randn(x.shape, generator=generator, device="cpu")
        z = z.to(device=x.device, dtype=x.dtype)
        if variance == "small":
            x = reverse_step(x0, x, t, t_to, z)
            continue
        tt, tt_to = torch.tensor(t, dtype=torch.float64), torch.tensor(t_to, dtype=torch.float64)
        c1, c2, _ = transition_coefficients(tt, tt_to)
        beta = (1.0 - (tt_to / tt.clamp(min=EPS) * (1 - tt) / (1 - tt_to).clamp(min=EPS)) ** 2) * tt**2
        std = (beta * ((1 - tt_to) ** 2 + tt_to**2) / ((1 - tt) ** 2 + tt**2)).sqrt()
        x = float(c1) * x + float(c2) * x0 + float(std) * z
    return x
