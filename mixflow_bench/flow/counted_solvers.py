"""The κ-FC mixed-source paper's ODE solvers, counting network evaluations (NFE) as the paper reports them.

Every solver integrates ``dx/dt = velocity(x, t)`` over a grid in the velocity's own convention (for the
mixed-source models ``DATA_AT_1``: from t = 0, the source, to t = 1, data) on the core samplers of
:mod:`mixflow_bench.flow.samplers`, and returns the final state, the states on the grid and the number of calls
of ``velocity``:

* ``euler``: N steps, NFE = N.
* ``manual_heun``: Heun's predictor-corrector on every step but the last, which is a plain Euler step, so
  NFE = 2N - 1 (N = 3 gives the paper's "5 NFE", N = 5 its "9 NFE").
* ``rk45``: adaptive Dormand-Prince 5(4) through torchdiffeq, rtol = atol = 1e-5 by default; NFE as counted.
* ``rk45_scipy``: scipy's ``RK45`` (``solve_ivp`` through torchdiffeq's ``scipy_solver``), what the paper's
  CIFAR-10 RK45 row ran (``test.use_scipy=true``): the whole batch is one flattened float64 state with one step
  size, each evaluation in the input's dtype; NFE as counted (about 125 there).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from mixflow_bench.flow import samplers as core

VelocityFn = Callable[[Tensor, Tensor], Tensor]
SOLVERS = ("euler", "manual_heun", "rk45", "rk45_scipy")


@dataclass
class Solution:
    sample: Tensor
    trajectory: list[Tensor]  # states at the grid times (for rk45: at the start and the end)
    nfe: int


class _Counted:
    def __init__(self, velocity: VelocityFn) -> None:
        self.velocity, self.nfe = velocity, 0

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        self.nfe += 1
        return self.velocity(x, t)


def uniform_times(steps: int, start: float = 0.0, end: float = 1.0) -> Tensor:
    """``steps + 1`` equally spaced times (``torch.linspace(start, end, steps + 1)``, as the paper's grid)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    return torch.linspace(start, end, steps + 1, dtype=torch.float64)


def euler(velocity: VelocityFn, x: Tensor, steps: int, start: float = 0.0, end: float = 1.0) -> Solution:
    """Explicit Euler on the uniform grid from ``start`` to ``end`` (NFE = steps)."""
    f = _Counted(velocity)
    states = core.euler(f, x, uniform_times(steps, start, end), trajectory=True)
    return Solution(states[-1], states, f.nfe)


def manual_heun(velocity: VelocityFn, x: Tensor, steps: int, start: float = 0.0, end: float = 1.0) -> Solution:
    """Heun on the uniform grid whose last step is Euler (NFE = 2 steps - 1)."""
    f = _Counted(velocity)
    states = core.heun(f, x, uniform_times(steps, start, end), trajectory=True, last_step_euler=True)
    return Solution(states[-1], states, f.nfe)


def rk45(
    velocity: VelocityFn, x: Tensor, start: float = 0.0, end: float = 1.0, *, rtol: float = 1e-5, atol: float = 1e-5
) -> Solution:
    """Adaptive Dormand-Prince 5(4) (torchdiffeq ``dopri5``) with the evaluations counted."""
    out = core.dopri5(velocity, x, start, end, atol=atol, rtol=rtol)
    return Solution(out.sample, [x, out.sample], out.evaluations)


@torch.no_grad()
def rk45_scipy(
    velocity: VelocityFn, x: Tensor, start: float = 0.0, end: float = 1.0, *, rtol: float = 1e-5, atol: float = 1e-5
) -> Solution:
    """scipy's adaptive RK45 from ``start`` to ``end`` on the flattened batch, evaluations counted."""
    from torchdiffeq import odeint

    f = _Counted(velocity)

    def func(t: Tensor, state: Tensor) -> Tensor:
        return f(state, core._t(float(t), state))

    times = torch.tensor([start, end], dtype=x.dtype, device=x.device)
    with warnings.catch_warnings():  # torchdiffeq passes scipy a min_step that RK45 ignores (its default 0)
        warnings.filterwarnings("ignore", message=".*no effect for a chosen solver: `min_step`")
        out = odeint(func, x, times, method="scipy_solver", options={"solver": "RK45"}, rtol=rtol, atol=atol)
    return Solution(out[-1], [x, out[-1]], f.nfe)


def solve(velocity: VelocityFn, x: Tensor, solver: str, steps: int | None = None) -> Solution:
    """Dispatch by name: ``euler``/``manual_heun`` need ``steps``; ``rk45`` ignores it."""
    if solver == "euler":
        return euler(velocity, x, steps or 0)
    if solver == "manual_heun":
        return manual_heun(velocity, x, steps or 0)
    if solver == "rk45":
        return rk45(velocity, x)
    if solver == "rk45_scipy":
        return rk45_scipy(velocity, x)
    raise ValueError(f"unknown solver {solver!r} (expected one of: {', '.join(SOLVERS)})")


def heun_steps_for_nfe(nfe: int) -> int:
    """Steps N of ``manual_heun`` that spend ``nfe`` evaluations (2N - 1 = nfe; nfe must be odd)."""
    if nfe < 1 or nfe % 2 == 0:
        raise ValueError(f"manual Heun spends an odd number of evaluations (2N - 1), got {nfe}")
    return (nfe + 1) // 2
