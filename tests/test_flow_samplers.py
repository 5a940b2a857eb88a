"""Samplers on Gaussian data, where the true velocity and flow map are known in closed form.

Data x1 ~ N(mu, diag(s^2)), noise x0 ~ N(0, I), linear path in data-ward time tau:
x_tau = tau x1 + (1 - tau) x0 has variance V = tau^2 s^2 + (1 - tau)^2, the exact velocity is
v(x, tau) = mu + (tau s^2 - (1 - tau)) / V * (x - tau mu) and the flow maps noise z to mu + s z.
"""

import math

import numpy as np
import pytest
import torch

from mixflow_bench.flow import (
    Path,
    TimeConvention,
    autoguidance,
    classifier_free,
    dopri5,
    euler,
    euler_maruyama,
    heun,
    rae_grid,
    rae_shift_factor,
    sit_sde_grid,
    uniform_grid,
)

pytestmark = pytest.mark.float_sensitive  # also run with OMP_NUM_THREADS=1 in CI (.ci/run)

MU = torch.tensor([1.5, -0.5, 0.0], dtype=torch.float64)
S = torch.tensor([0.5, 2.0, 1.0], dtype=torch.float64)


def exact_velocity(convention: TimeConvention):
    def v(x, t):
        tau = t if convention is TimeConvention.DATA_AT_1 else 1 - t
        tau = tau.to(x.dtype)[:, None]
        var = tau**2 * S**2 + (1 - tau) ** 2
        u = MU + (tau * S**2 - (1 - tau)) / var * (x - tau * MU)
        return u if convention is TimeConvention.DATA_AT_1 else -u

    return v


def noise(n=256, seed=0):
    return torch.randn(n, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("convention", list(TimeConvention))
@pytest.mark.parametrize("method,order", [(euler, 1), (heun, 2)])
def test_ode_converges_at_its_order(convention, method, order):
    z = noise()
    exact = MU + S * z
    errors = []
    for steps in (8, 16, 32, 64):
        out = method(exact_velocity(convention), z, uniform_grid(steps, convention))
        errors.append((out - exact).abs().max().item())
    ratios = [errors[i] / errors[i + 1] for i in range(3)]
    # halving the step divides the error by 2**order
    assert all(abs(math.log2(r) - order) < 0.25 for r in ratios[1:]), (errors, ratios)
    assert errors[-1] < (0.2 if order == 1 else 1e-2)


def test_dopri5_reaches_tolerance():
    z = noise()
    res = dopri5(exact_velocity(TimeConvention.DATA_AT_1), z, 0.0, 1.0, atol=1e-8, rtol=1e-8)
    assert (res.sample - (MU + S * z)).abs().max() < 1e-6
    assert res.evaluations > 6


def test_both_conventions_give_the_same_ode_path():
    z = noise()
    a = euler(exact_velocity(TimeConvention.DATA_AT_1), z, uniform_grid(10, TimeConvention.DATA_AT_1))
    b = euler(exact_velocity(TimeConvention.DATA_AT_0), z, uniform_grid(10, TimeConvention.DATA_AT_0))
    assert torch.allclose(a, b, atol=1e-12)


def test_trajectory_records_every_grid_time():
    z = noise(4)
    traj = euler(
        exact_velocity(TimeConvention.DATA_AT_1), z, uniform_grid(5, TimeConvention.DATA_AT_1), trajectory=True
    )
    assert len(traj) == 6 and torch.equal(traj[0], z)


@pytest.mark.parametrize("convention", list(TimeConvention))
def test_sde_matches_exact_mean_and_covariance(convention):
    n = 20_000
    z = noise(n, seed=1)
    calls = []
    base = exact_velocity(convention)

    def v(x, t):
        calls.append(float(t[0]))
        return base(x, t)

    out = euler_maruyama(v, z, Path("linear", convention), steps=250, generator=torch.Generator().manual_seed(2))
    assert len(calls) == 250  # 249 stochastic steps + 1 final drift-only step
    mean, var = out.mean(0), out.var(0)
    se_mean = S / math.sqrt(n)
    assert torch.all((mean - MU).abs() < 4 * se_mean + 0.01), mean
    assert torch.all((var / S**2 - 1).abs() < 4 * math.sqrt(2 / n) + 0.02), var
    cov = torch.cov(out.T)
    assert cov[0, 1].abs() < 0.03 and cov[0, 2].abs() < 0.03


def test_sde_is_convention_independent_given_the_same_noise():
    z = noise(64)
    outs = []
    for conv in TimeConvention:
        g = torch.Generator().manual_seed(5)
        outs.append(euler_maruyama(exact_velocity(conv), z, Path("linear", conv), steps=50, generator=g))
    assert torch.allclose(outs[0], outs[1], atol=1e-10)


def test_grids_match_their_published_definitions():
    g = sit_sde_grid(250, 0.04)
    assert len(g) == 250 and g[0] == 0 and abs(g[-1] - 0.96) < 1e-12
    s = rae_shift_factor(768, 16, 16)
    assert abs(s - math.sqrt(48)) < 1e-12
    r = rae_grid(50, s).numpy()
    base = np.linspace(1.0, 0.001, 50)
    np.testing.assert_allclose(r, s * base / (1 + (s - 1) * base))
    assert len(r) == 50 and abs(r[-1] - 0.0069) < 5e-5 and r[0] == 1.0


# --- guidance ------------------------------------------------------------------------------------------------
class Recorder(torch.nn.Module):
    """A fake model whose output encodes its inputs, recording each call's batch size."""

    def __init__(self, offset=0.0):
        super().__init__()
        self.batches, self.offset = [], offset

    def forward(self, x, t, y):
        self.batches.append(len(x))
        return x * 0 + y[:, None, None, None].float() * 10 + t[:, None, None, None] + self.offset


def test_cfg_on_first_channels_only_against_brute_force():
    x = torch.randn(2, 4, 2, 2)
    y = torch.tensor([3, 7])
    model = Recorder()
    out = classifier_free(model, y, 1.5, null_label=1000, channels=3)(x, torch.full((2,), 0.3))
    cond = model(x, torch.full((2,), 0.3), y)
    uncond = model(x, torch.full((2,), 0.3), torch.full((2,), 1000))
    expected = cond.clone()
    expected[:, :3] = uncond[:, :3] + 1.5 * (cond[:, :3] - uncond[:, :3])
    assert torch.allclose(out, expected)
    assert model.batches[0] == 4  # conditional and null halves in one batch


def test_cfg_interval_evaluates_only_the_conditional_half_outside():
    x = torch.randn(2, 4, 1, 1)
    y = torch.tensor([1, 2])
    model = Recorder()
    v = classifier_free(model, y, 1.8, interval=(0.0, 0.7))
    outside = v(x, torch.full((2,), 0.9))
    inside = v(x, torch.full((2,), 0.7))
    assert model.batches == [2, 4]
    assert torch.allclose(outside, model(x, torch.full((2,), 0.9), y))
    uncond = model(x, torch.full((2,), 0.7), torch.full((2,), 1000))
    cond = model(x, torch.full((2,), 0.7), y)
    assert torch.allclose(inside, uncond + 1.8 * (cond - uncond))


def test_autoguidance_formula_and_no_null_half():
    x = torch.randn(3, 2, 1, 1)
    y = torch.tensor([0, 1, 2])
    main, guide = Recorder(), Recorder(offset=0.25)
    out = autoguidance(main, guide, y, 1.42)(x, torch.full((3,), 0.5))
    m, g = main(x, torch.full((3,), 0.5), y), guide(x, torch.full((3,), 0.5), y)
    assert torch.allclose(out, g + 1.42 * (m - g))
    assert main.batches[0] == 3 and guide.batches[0] == 3  # same labels, no doubled batch


def test_cfg_on_gaussian_mixture_matches_exact_guided_velocity():
    """CFG with scale 1 returns the conditional model exactly."""
    model = Recorder()
    v = classifier_free(model, torch.tensor([4]), 1.0)
    x = torch.randn(1, 4, 1, 1)
    assert torch.equal(v(x, torch.full((1,), 0.2)), model(x, torch.full((1,), 0.2), torch.tensor([4])))
    assert model.batches == [1, 1]
