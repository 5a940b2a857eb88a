"""Objectives: the sampled (t, m) law against its closed form, and targets against brute-force formulas."""

import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from mixflow_bench.flow import FlowMatching, Path, TimeConvention, mixflow, rae_shift_factor

pytestmark = pytest.mark.float_sensitive  # also run with OMP_NUM_THREADS=1 in CI (.ci/run)

N = 40_000


def draw(obj: FlowMatching, n: int = N, shape=(3,), seed: int = 0):
    return obj.draw(n, shape, torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("gamma", [0.4, 0.8, 1.0])
def test_mixflow_joint_law_matches_closed_form(gamma):
    """tau ~ Beta(2,1); (tau - m) / (gamma tau) ~ U[0,1] independent of tau; m's marginal CDF by quadrature."""
    obj = mixflow(Path("linear", TimeConvention.DATA_AT_1), gamma=gamma)
    tau, m = (v.numpy() for v in obj.times(draw(obj)))
    assert stats.kstest(tau, stats.beta(2, 1).cdf).pvalue > 1e-3
    frac = (tau - m) / (gamma * tau)
    assert stats.kstest(frac, "uniform").pvalue > 1e-3
    assert abs(np.corrcoef(frac, tau)[0, 1]) < 0.03

    def m_cdf(x: float) -> float:  # P(m <= x) = int_0^1 2 tau P(U >= (tau - x)/(gamma tau)) dtau
        f = lambda t: 2 * t * (1.0 - np.clip((t - x) / (gamma * t), 0.0, 1.0))  # noqa: E731
        return integrate.quad(f, 0.0, 1.0, points=[x, x / (1 - gamma)] if gamma < 1 else [x], limit=200)[0]

    grid = np.linspace(0.0, 1.0, 801)
    table = np.array([m_cdf(x) for x in grid])
    assert stats.kstest(m, lambda v: np.interp(v, grid, table)).pvalue > 1e-3
    assert np.all(m <= tau + 1e-12) and np.all(m >= (1 - gamma) * tau - 1e-12)


def test_ablation_variants():
    path = Path("linear", TimeConvention.DATA_AT_1)
    # m ~ U[0, 1] independent of t
    obj = FlowMatching(path, t_dist="uniform", mixture="uniform")
    tau, m = (v.numpy() for v in obj.times(draw(obj)))
    assert stats.kstest(tau, "uniform").pvalue > 1e-3 and stats.kstest(m, "uniform").pvalue > 1e-3
    assert abs(np.corrcoef(tau, m)[0, 1]) < 0.03
    # m ~ U[0, t]
    obj = FlowMatching(path, t_dist="beta21", mixture="zero-to-t")
    tau, m = (v.numpy() for v in obj.times(draw(obj)))
    assert stats.kstest(m / tau, "uniform").pvalue > 1e-3
    # plain FM: m == t
    obj = FlowMatching(path, t_dist="uniform")
    tau, m = obj.times(draw(obj))
    assert torch.equal(tau, m)


def test_noise_ward_form_with_rae_shift():
    """RAE form: sigma = 1 - sqrt(U), shifted, sigma_in = sigma + U' gamma (1 - sigma); model sees sigma."""
    gamma, shift = 0.4, rae_shift_factor(768, 16, 16)
    path = Path("linear", TimeConvention.DATA_AT_0)
    obj = mixflow(path, gamma=gamma, time_shift=shift)
    rnd = draw(obj, n=2000, shape=(5,))
    x1 = torch.randn(2000, 5, generator=torch.Generator().manual_seed(1))
    y = torch.zeros(2000, dtype=torch.long)
    x_in, t_cond, _, target = obj.inputs(x1, y, rnd)

    # brute force, written in the noise-ward form of the official patch
    u, u2, eps = rnd["u_time"].numpy(), rnd["u_mix"].numpy(), rnd["noise"].double().numpy()
    sigma = 1 - np.sqrt(u)
    sigma = shift * sigma / (1 + (shift - 1) * sigma)
    sigma_in = sigma + u2 * gamma * (1 - sigma)
    xb = x1.double().numpy()
    np.testing.assert_allclose(t_cond.numpy(), sigma, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(
        x_in.double().numpy(), (1 - sigma_in)[:, None] * xb + sigma_in[:, None] * eps, rtol=1e-5, atol=1e-5
    )
    np.testing.assert_allclose(target.double().numpy(), eps - xb, rtol=1e-6, atol=1e-6)

    # law of the shifted noise level: P(sigma' <= s) = 1 - (1 - inv_shift(s))^2 with inv_shift(s) = s/(s + k(1-s))
    big = draw(obj, n=N)
    tau, _ = obj.times(big)
    sig = 1 - tau.numpy()

    def cdf(s):
        a = s / (s + shift * (1 - s))
        return 1 - (1 - a) ** 2

    assert stats.kstest(sig, cdf).pvalue > 1e-3


@pytest.mark.parametrize("convention", list(TimeConvention))
@pytest.mark.parametrize("target", ["slowed", "original"])
def test_gvp_targets_against_finite_differences(convention, target):
    path = Path("gvp", convention)
    obj = mixflow(path, gamma=0.8, target=target)
    rnd = draw(obj, n=64, shape=(4,))
    x1 = torch.randn(64, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    x_in, t_cond, _, tgt = obj.inputs(x1, torch.zeros(64, dtype=torch.long), rnd)
    tau, m = obj.times(rnd)
    eps = rnd["noise"].double()

    def interp(tt):  # data-ward by hand: alpha = sin(pi tau/2), sigma = cos(pi tau/2)
        return torch.sin(math.pi * tt / 2)[:, None] * x1 + torch.cos(math.pi * tt / 2)[:, None] * eps

    t_expected = tau if convention is TimeConvention.DATA_AT_1 else 1 - tau
    assert torch.allclose(t_cond, t_expected)
    assert torch.allclose(x_in, interp(m), atol=1e-12)
    at = m if target == "slowed" else tau
    h = 1e-6
    fd = (interp(at + h) - interp(at - h)) / (2 * h)  # d/dtau
    if convention is TimeConvention.DATA_AT_0:
        fd = -fd  # d/dt with t = 1 - tau
    assert torch.allclose(tgt, fd, atol=1e-6)


def test_linear_target_is_the_same_for_slowed_and_original():
    path = Path("linear", TimeConvention.DATA_AT_1)
    rnd = draw(mixflow(path), n=32, shape=(2,))
    x1 = torch.randn(32, 2)
    a = mixflow(path, target="slowed").inputs(x1, torch.zeros(32, dtype=torch.long), rnd)[3]
    b = mixflow(path, target="original").inputs(x1, torch.zeros(32, dtype=torch.long), rnd)[3]
    assert torch.allclose(a, b) and torch.allclose(a, x1 - rnd["noise"])


def test_label_dropout_rate_and_null_label():
    obj = FlowMatching(Path(), label_dropout=0.1, null_label=10)
    rnd = draw(obj, n=N, shape=(1,))
    y = torch.randint(10, (N,), generator=torch.Generator().manual_seed(0))
    _, _, y_out, _ = obj.inputs(torch.zeros(N, 1), y, rnd)
    dropped = (y_out == 10).float().mean().item()
    assert abs(dropped - 0.1) < 4 * math.sqrt(0.1 * 0.9 / N)
    assert torch.equal(y_out[y_out != 10], y[y_out != 10])


def test_loss_is_per_sample_mse():
    path = Path("linear", TimeConvention.DATA_AT_1)
    obj = mixflow(path)
    rnd = draw(obj, n=8, shape=(3,))
    x1 = torch.randn(8, 3)
    zero = lambda x, t, y: torch.zeros_like(x)  # noqa: E731
    loss = obj.loss(zero, x1, torch.zeros(8, dtype=torch.long), rnd)
    assert torch.allclose(loss, ((x1 - rnd["noise"]) ** 2).mean(1))
