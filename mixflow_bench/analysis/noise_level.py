"""How much a noisy input tells about its own noise level: the posterior of the time given the input.

On the data-ward linear path ``x = s x1 + (1 - s) x0`` (``x0 ~ N(0, I)``, s = 1 is data) with data whose density
at every time is known (:class:`~mixflow_bench.analysis.exact_velocity.GaussianMixtureField`: the toy2d ring in
closed form, or a finite training set), the posterior ``p(s | x, y) ∝ p(s) p_s(x | y)`` under a uniform prior on
an interval is a one-dimensional integral, computed here by the midpoint rule. Two priors are measured:

* the whole range [0, 1] (flow matching's uniform time law): does x name its time at all?
* MixFlow's window [(1 - gamma) t, t] given the time t the network is told: does the slowed input x_m reveal its
  slowed time m beyond t? Where it does, a network can tell slowed inputs from unslowed ones and is not forced
  into MixFlow's averaged (slowed) optimum; where it does not, the optimum is all the network can learn.

The posterior's standard deviation against the prior's (interval width / sqrt(12)) is the share of the noise
level the input leaves open: 100% means x says nothing beyond the prior, small values that x all but names it.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from mixflow_bench.analysis.exact_velocity import GaussianMixtureField


def posterior_time_moments(
    field: GaussianMixtureField, x: Tensor, y: Tensor | None, lo: Tensor, hi: Tensor, grid: int = 200
) -> tuple[Tensor, Tensor]:
    """Mean and standard deviation (B,) of the data-ward time s given each flattened input ``x`` (B, D) (and
    label ``y``), under the uniform prior on ``[lo, hi]`` (B,), by ``grid`` midpoints."""
    frac = (torch.arange(grid, dtype=torch.float64) + 0.5) / grid
    lo, hi = lo.double(), hi.double()
    nodes = lo[None] + frac[:, None] * (hi - lo)[None]  # (grid, B)
    post = torch.softmax(field.log_density_at_times(x, nodes, y), 0)
    mean = (post * nodes).sum(0)
    var = (post * (nodes - mean[None]) ** 2).sum(0)
    return mean, var.clamp_min(0.0).sqrt()


def noise_level_information(
    field: GaussianMixtureField,
    x1: Tensor,
    y: Tensor | None,
    times: list[float],
    samples: int,
    generator: torch.Generator,
    gamma: float | None = None,
    grid: int = 200,
) -> dict[str, list[float]]:
    """At each data-ward time t of ``times``: the posterior standard deviation of the input's time relative to
    the prior's (mean and median over ``samples`` inputs drawn from the data ``x1`` (N, ...), labels ``y``).

    ``gamma`` None: inputs ``x_t``, prior U[0, 1]. Otherwise MixFlow's: inputs ``x_m`` with
    ``m ~ U[(1 - gamma) t, t]``, prior the same window.
    """
    flat = x1.reshape(len(x1), -1).double()
    out: dict[str, list[float]] = {"t": [], "spread_mean": [], "spread_median": []}
    for t in times:
        idx = torch.randint(len(flat), (samples,), generator=generator)
        noise = torch.randn((samples, flat.shape[1]), generator=generator, dtype=torch.float64)
        if gamma is None:
            lo, hi = torch.zeros(samples, dtype=torch.float64), torch.ones(samples, dtype=torch.float64)
            s = torch.full((samples,), float(t), dtype=torch.float64)
        else:
            lo, hi = torch.full((samples,), (1.0 - gamma) * t, dtype=torch.float64), torch.full((samples,), float(t))
            s = lo + torch.rand(samples, generator=generator, dtype=torch.float64) * (hi - lo)
        x = s[:, None] * flat[idx] + (1.0 - s[:, None]) * noise
        _, std = posterior_time_moments(field, x, None if y is None else y[idx], lo, hi.double(), grid)
        ratio = std / ((hi.double() - lo) / math.sqrt(12.0))
        out["t"].append(float(t))
        out["spread_mean"].append(float(ratio.mean()))
        out["spread_median"].append(float(ratio.median()))
    return out
