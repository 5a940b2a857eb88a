"""Slow-Flow estimator against closed forms (Gaussian data, exact velocity, few Euler steps) and brute force."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from mixflow_bench.analysis.exact_velocity import gaussian_velocity, ring_velocity
from mixflow_bench.analysis.slow_flow import (
    analyze,
    nearest_interpolation,
    nearest_interpolation_time,
    null_curve,
    slow_flow_curve,
    summarize,
)
from mixflow_bench.data.toy import GaussianRing
from mixflow_bench.flow.conventions import TimeConvention

pytestmark = pytest.mark.float_sensitive  # also run with OMP_NUM_THREADS=1 in CI (.ci/run)

MU = np.array([1.5, -0.5, 2.0])
STD = np.array([2.0, 3.0, 1.5])  # wider than the noise: few Euler steps lag behind the flow


def _analytic_slowed_times(x0: np.ndarray, steps: int) -> np.ndarray:
    """(steps+1, N): Euler states as affine maps of x0 per dimension, projected on x1* = mu + std x0."""
    taus = np.linspace(0.0, 1.0, steps + 1)
    a, b = np.ones_like(MU), np.zeros_like(MU)
    x1 = MU + STD * x0  # the exact flow's endpoint of each trajectory
    out = []
    for i in range(steps + 1):
        xhat = a * x0 + b
        r, d = xhat - x0, x1 - x0
        out.append(np.clip((r * d).sum(1) / (d * d).sum(1), 0.0, 1.0))
        if i < steps:
            tau, h = taus[i], taus[i + 1] - taus[i]
            c = (tau * STD**2 - (1 - tau)) / (tau**2 * STD**2 + (1 - tau) ** 2)
            a, b = a * (1 + h * c), b + h * (MU + c * (b - tau * MU))
    return np.array(out)


def _per_sample_curves(velocity, x0: torch.Tensor, steps: int, convention) -> np.ndarray:
    x1 = torch.tensor(MU) + torch.tensor(STD) * x0
    cols = [
        slow_flow_curve(velocity, x0[n : n + 1], x1[n : n + 1], steps, convention)["m"][:, 0].numpy()
        for n in range(len(x0))
    ]
    return np.stack(cols, axis=1)


@pytest.mark.parametrize("steps", [3, 5])
def test_euler_slowed_time_matches_closed_form(steps):
    x0 = torch.randn(12, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    vel = gaussian_velocity(torch.tensor(MU), torch.tensor(STD))
    got = _per_sample_curves(vel, x0, steps, TimeConvention.DATA_AT_1)
    want = _analytic_slowed_times(x0.numpy(), steps)
    np.testing.assert_allclose(got, want, atol=1e-9)

    # Few Euler steps slow the flow: where the closed form says m < t the estimator says so, and vice versa.
    taus = np.broadcast_to(np.linspace(0.0, 1.0, steps + 1)[:, None], got.shape)
    slowed, faster = want < taus - 1e-6, want > taus + 1e-6
    assert slowed[1:].mean() > 0.5, "setup should exhibit slowing"
    assert np.all(got[slowed] < taus[slowed]) and np.all(got[faster] > taus[faster])


def test_data_at_0_model_gives_same_curve():
    x0 = torch.randn(6, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    vel = gaussian_velocity(torch.tensor(MU), torch.tensor(STD))

    def vel_data_at_0(x, t):  # the same field written in REPA/RAE time (t = 0 data)
        return -vel(x, 1.0 - t)

    ref = torch.tensor(MU) + torch.tensor(STD) * torch.randn(50, 3, generator=torch.Generator().manual_seed(3))
    a = slow_flow_curve(vel, x0, ref, 4, TimeConvention.DATA_AT_1)
    b = slow_flow_curve(vel_data_at_0, x0, ref, 4, TimeConvention.DATA_AT_0)
    np.testing.assert_allclose(a["t"], [0, 0.25, 0.5, 0.75, 1.0], atol=1e-12)
    np.testing.assert_allclose(b["t"], a["t"], atol=1e-12)
    np.testing.assert_allclose(b["m"].numpy(), a["m"].numpy(), atol=1e-9)


def test_projection_matches_brute_force_grid_and_chunks_agree():
    g = torch.Generator().manual_seed(4)
    ref = torch.randn(300, 5, generator=g, dtype=torch.float64)
    x0 = torch.randn(20, 5, generator=g, dtype=torch.float64)
    x_t = 0.6 * torch.randn(20, 5, generator=g, dtype=torch.float64) + 0.3 * x0
    s_full, d_full = nearest_interpolation(x_t, x0, ref, chunk=4096)
    s_chunk, d_chunk = nearest_interpolation(x_t, x0, ref, chunk=7)
    np.testing.assert_allclose(s_chunk.numpy(), s_full.numpy(), atol=1e-12)
    np.testing.assert_allclose(d_chunk.numpy(), d_full.numpy(), rtol=1e-12)
    # brute force: dense grid over s, loop over reference points
    grid = np.linspace(0, 1, 20001)
    X, N, R = x_t.numpy(), x0.numpy(), ref.numpy()
    for n in range(len(X)):
        interp = grid[None, :, None] * R[:, None, :] + (1 - grid[None, :, None]) * N[n][None, None, :]
        dist = np.linalg.norm(interp - X[n], axis=-1)  # (M, S)
        j, k = np.unravel_index(dist.argmin(), dist.shape)
        assert abs(grid[k] - float(s_full[n])) < 1e-4
        assert abs(dist[j, k] - float(d_full[n])) < 1e-6


def test_null_curve_with_own_point_in_reference_is_exact():
    g = torch.Generator().manual_seed(5)
    held = torch.randn(15, 4, generator=g)
    ref = torch.cat([torch.randn(40, 4, generator=g), held])
    times = torch.linspace(0, 1, 9, dtype=torch.float64)
    curve = null_curve(held, ref, times, torch.Generator().manual_seed(0))
    np.testing.assert_allclose(curve["m"].numpy(), np.broadcast_to(times.numpy()[:, None], (9, 15)), atol=1e-9)
    # without the point itself the estimate cannot be exact (bias of the estimator)
    biased = null_curve(held, ref[:40], times, torch.Generator().manual_seed(0))
    assert float((biased["m"][4] - 0.5).abs().max()) > 1e-3


def test_time_at_noise_is_zero_and_shapes_checked():
    x0 = torch.randn(4, 3)
    assert torch.all(nearest_interpolation_time(x0, x0, torch.randn(10, 3)) == 0)
    with pytest.raises(ValueError, match="reference"):
        nearest_interpolation_time(x0, x0, torch.randn(10, 2))


def test_summarize_percentiles_match_numpy():
    m = torch.rand(3, 101, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    s = summarize({"t": [0.0, 0.5, 1.0], "m": m})
    for p in (5, 25, 50, 75, 95):
        np.testing.assert_allclose(s["percentiles"][str(p)], np.percentile(m.numpy(), p, axis=1), atol=1e-12)
    json.dumps(s)


@pytest.mark.parametrize("tau", [0.1, 0.5, 0.9])
def test_exact_velocities_satisfy_tweedie(tau):
    """v = (x + (1 - tau) grad log p_tau(x)) / tau on the linear path, with p_tau written out independently."""
    ring = GaussianRing()
    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(7), dtype=torch.float64) * 2
    x.requires_grad_(True)
    var = tau**2 * ring.std**2 + (1 - tau) ** 2
    d2 = ((x[:, None, :] - tau * ring.centers()[None]) ** 2).sum(-1)
    logp = torch.logsumexp(-d2 / (2 * var), dim=1).sum()
    (grad,) = torch.autograd.grad(logp, x)
    want = (x.detach() + (1 - tau) * grad) / tau
    got = ring_velocity(ring)(x.detach(), torch.full((64,), tau, dtype=torch.float64))
    np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-9)

    mu, std = torch.tensor(MU), torch.tensor(STD)
    xg = torch.randn(16, 3, dtype=torch.float64, requires_grad=True)
    vg = tau**2 * std**2 + (1 - tau) ** 2
    lp = (-((xg - tau * mu) ** 2) / (2 * vg)).sum()
    (gg,) = torch.autograd.grad(lp, xg)
    got_g = gaussian_velocity(mu, std)(xg.detach(), torch.full((16,), tau, dtype=torch.float64))
    np.testing.assert_allclose(got_g.numpy(), ((xg.detach() + (1 - tau) * gg) / tau).numpy(), atol=1e-9)


def test_analyze_writes_json_and_png(tmp_path):
    mu, std = torch.tensor(MU), torch.tensor(STD)
    g = torch.Generator().manual_seed(8)
    ref = mu + std * torch.randn(200, 3, generator=g, dtype=torch.float64)
    held = mu + std * torch.randn(30, 3, generator=g, dtype=torch.float64)
    x0 = torch.randn(30, 3, generator=g, dtype=torch.float64)
    vel = gaussian_velocity(mu, std)
    out = analyze({"exact": vel, "exact-data-at-0": (lambda x, t: -vel(x, 1 - t), TimeConvention.DATA_AT_0)},
                  x0, ref, held, 4, tmp_path, "test")
    data = json.loads((tmp_path / "slow_flow.json").read_text())
    assert data["models"]["exact"]["percentiles"]["50"] == out["models"]["exact"]["percentiles"]["50"]
    np.testing.assert_allclose(data["models"]["exact-data-at-0"]["percentiles"]["50"],
                               data["models"]["exact"]["percentiles"]["50"], atol=1e-9)
    assert len(data["null"]["t"]) == 5 and math.isclose(data["null"]["t"][-1], 1.0)
    assert (tmp_path / "slow_flow.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
