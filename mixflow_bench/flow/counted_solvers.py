"""ODE solvers that count network evaluations (NFE), as the κ-FC mixed-source paper reports them.

Every solver integrates ``dx/dt = velocity(x, t)`` over a grid in the velocity's own convention (for the
mixed-source models ``DATA_AT_1``: from t = 0, the source, to t = 1, data) and returns the final state, the states
on the grid and the number of calls of ``velocity``:

* ``euler``: N steps, NFE = N.
* ``manual_heun``: Heun's predictor-corrector on every step but the last, which is a plain Euler step, so
  NFE = 2N - 1 (N = 3 gives the paper's "5 NFE", N = 5 its "9 NFE").
* ``rk45``: adaptive Dormand-Prince 5(4) through torchdiffeq, rtol = atol = 1e-5 by default; NFE as counted.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

VelocityFn = Callable[[Tensor, Tensor], Tensor]
SOLVERS = ("euler", "manual_heun", "rk45")


@dataclass
class Solution:
    sample: Tensor
    trajectory: list[Tensor]  # states at the grid times (for rk45: at the start and the end)
    nfe: int


class _Counted:
    def __init__(self, velocity: VelocityFn) -> None:
        self.velocity, self.nfe = velocity, 0

    def __call__(self, x: Tensor, t: float) -> Tensor:
        self.nfe += 1
        dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        return self.velocity(x, torch.full((x.shape[0],), float(t), device=x.device, dtype=dtype))


def uniform_times(steps: int, start: float = 0.0, end: float = 1.0) -> list[float]:
    """``steps + 1`` equally spaced times (``torch.linspace(start, end, steps + 1)``, as the paper's grid)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    return torch.linspace(start, end, steps + 1, dtype=torch.float64).tolist()


@torch.no_grad()
def euler(velocity: VelocityFn, x: Tensor, steps: int, start: float = 0.0, end: float = 1.0) -> Solution:
    """Explicit Euler on the uniform grid from ``start`` to ``end`` (NFE = steps)."""
    f = _Counted(velocity)
    times = uniform_times(steps, start, end)
    states = [x]
    for t0, t1 in zip(times[:-1], times[1:]):
        x = x + (t1 - t0) * f(x, t0)
        states.append(x)
    return Solution(x, states, f.nfe)


@torch.no_grad()
def manual_heun(velocity: VelocityFn, x: Tensor, steps: int, start: float = 0.0, end: float = 1.0) -> Solution:
    """Heun on the uniform grid whose last step is Euler (NFE = 2 steps - 1)."""
    f = _Counted(velocity)
    times = uniform_times(steps, start, end)
    states = [x]
    for i, (t0, t1) in enumerate(zip(times[:-1], times[1:])):
        h = t1 - t0
        k1 = f(x, t0)
        if i < steps - 1:
            k2 = f(x + h * k1, t1)
            x = x + 0.5 * h * (k1 + k2)
        else:
            x = x + h * k1
        states.append(x)
    return Solution(x, states, f.nfe)


@torch.no_grad()
def rk45(
    velocity: VelocityFn, x: Tensor, start: float = 0.0, end: float = 1.0, *, rtol: float = 1e-5, atol: float = 1e-5
) -> Solution:
    """Adaptive Dormand-Prince 5(4) (torchdiffeq ``dopri5``) with the evaluations counted."""
    from torchdiffeq import odeint

    f = _Counted(velocity)
    times = torch.tensor([start, end], dtype=x.dtype, device=x.device)
    out = odeint(lambda t, state: f(state, float(t)), x, times, method="dopri5", rtol=rtol, atol=atol)
    return Solution(out[-1], [out[0], out[-1]], f.nfe)


def solve(velocity: VelocityFn, x: Tensor, solver: str, steps: int | None = None) -> Solution:
    """Dispatch by name: ``euler``/``manual_heun`` need ``steps``; ``rk45`` ignores it."""
    if solver == "euler":
        return euler(velocity, x, steps or 0)
    if solver == "manual_heun":
        return manual_heun(velocity, x, steps or 0)
    if solver == "rk45":
        return rk45(velocity, x)
    raise ValueError(f"unknown solver {solver!r} (expected one of: {', '.join(SOLVERS)})")


def heun_steps_for_nfe(nfe: int) -> int:
    """Steps N of ``manual_heun`` that spend ``nfe`` evaluations (2N - 1 = nfe; nfe must be odd)."""
    if nfe < 1 or nfe % 2 == 0:
        raise ValueError(f"manual Heun spends an odd number of evaluations (2N - 1), got {nfe}")
    return (nfe + 1) // 2
