"""κ-FC mixed source: the mixture against its closed form, the KL against Monte Carlo, curvature by hand, NFE."""

from __future__ import annotations

import math

import pytest
import torch

from mixflow_bench.analysis.curvature import curvature, trajectory_curvature
from mixflow_bench.flow.counted_solvers import euler, heun_steps_for_nfe, manual_heun, rk45, rk45_scipy
from mixflow_bench.flow.mixed_source import (
    MixedSourceError,
    MixedSourceFlow,
    MixedSourceModel,
    kl_to_standard_normal,
    mixed_source_method,
    mixed_source_sample,
    mixture_moments,
)
from mixflow_bench.models.source_network import SourceMLP

pytestmark = pytest.mark.float_sensitive  # also run with OMP_NUM_THREADS=1 in CI (.ci/run)


@pytest.mark.parametrize("mixture", ["parameters", "random-variable"])
def test_mixture_moments_match_closed_form_and_samples(mixture):
    g = torch.Generator().manual_seed(0)
    n, mu, var = 200_000, torch.tensor([1.5, -2.0]), torch.tensor([0.25, 4.0])
    w = torch.full((n,), 0.3, dtype=torch.float64)
    mean = mu.double().expand(n, 2)
    log_var = var.double().log().expand(n, 2)
    eps, eps2 = torch.randn(n, 2, generator=g, dtype=torch.float64), torch.randn(n, 2, generator=g, dtype=torch.float64)
    x0 = mixed_source_sample(mean, log_var, w, eps, eps2, mixture)
    m, v = mixture_moments(mean[:1], var.double()[None], w[:1], mixture)
    # closed form written out by hand
    want_var = 0.3 * var + 0.7 if mixture == "parameters" else 0.09 * var + 0.49
    torch.testing.assert_close(m[0].float(), 0.3 * mu)
    torch.testing.assert_close(v[0].float(), want_var)
    torch.testing.assert_close(x0.mean(0).float(), 0.3 * mu, atol=0.01, rtol=0)
    torch.testing.assert_close(x0.var(0).float(), want_var, atol=0.02, rtol=0.01)


def test_mixture_endpoints():
    mean, log_var = torch.randn(5, 3), torch.randn(5, 3)
    eps = torch.randn(5, 3)
    torch.testing.assert_close(mixed_source_sample(mean, log_var, torch.zeros(5), eps), eps)
    pure = mixed_source_sample(mean, log_var, torch.ones(5), eps)
    torch.testing.assert_close(pure, mean + (0.5 * log_var).exp() * eps)


def test_kl_matches_monte_carlo():
    g = torch.Generator().manual_seed(1)
    mean = torch.tensor([[0.7, -0.3, 1.2]], dtype=torch.float64)
    log_var = torch.tensor([[-0.5, 0.4, 0.0]], dtype=torch.float64)
    n = 400_000
    z = mean + (0.5 * log_var).exp() * torch.randn(n, 3, generator=g, dtype=torch.float64)
    log_q = torch.distributions.Normal(mean, (0.5 * log_var).exp()).log_prob(z).sum(1)
    log_p = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(1)
    mc = float((log_q - log_p).mean())
    assert abs(float(kl_to_standard_normal(mean, log_var)[0]) - mc) < 0.01


def test_curvature_by_hand_straight_and_curved():
    x0 = torch.randn(7, 3)
    straight = curvature(lambda x, t: torch.ones_like(x) * 2.0, x0, steps=16)
    assert float(straight.abs().max()) < 1e-10
    # v(x, t) = 2t in 1-D; Euler with 4 steps: slopes 0, .5, 1, 1.5; net displacement 3/4
    curved = curvature(lambda x, t: 2.0 * t[:, None].to(x.dtype).expand_as(x), torch.zeros(3, 1), steps=4)
    want = sum((0.75 - 2 * k / 4) ** 2 for k in range(4)) / 4
    torch.testing.assert_close(curved, torch.full((3,), want))
    # direct formula on a random trajectory (T + 1, B, C, H, W): per-sample mean over steps and elements
    traj = torch.randn(9, 2, 3, 4, 4, dtype=torch.float64)
    ref = torch.stack([
        torch.stack([((traj[-1, b] - traj[0, b]) - (traj[k + 1, b] - traj[k, b]) * 8) ** 2 for k in range(8)]).mean()
        for b in range(2)
    ])
    torch.testing.assert_close(trajectory_curvature(traj), ref)


def test_solver_nfe_counts():
    x = torch.ones(2, 1, dtype=torch.float64)
    f = lambda x, t: x  # noqa: E731 - dx/dt = x
    assert euler(f, x, 7).nfe == 7
    for n in (1, 3, 5):
        sol = manual_heun(f, x, n)
        assert sol.nfe == 2 * n - 1 and len(sol.trajectory) == n + 1
    assert heun_steps_for_nfe(5) == 3 and heun_steps_for_nfe(9) == 5
    with pytest.raises(ValueError):
        heun_steps_for_nfe(4)
    # Heun steps multiply by (1 + h + h^2/2), the Euler last step by (1 + h)
    h = 1 / 3
    torch.testing.assert_close(manual_heun(f, x, 3).sample, x * (1 + h + h * h / 2) ** 2 * (1 + h))
    sol = rk45(f, x)
    assert sol.nfe > 6
    torch.testing.assert_close(sol.sample, x * math.e, atol=1e-4, rtol=1e-4)  # 10x dopri5's mixed tolerance


def test_rk45_scipy_is_scipys_rk45_on_the_flattened_batch():
    """The paper's CIFAR-10 RK45 row (``use_scipy``): ``solve_ivp(method="RK45")`` on the whole batch as one float64
    vector, rtol = atol = 1e-5; the same final state and evaluation count as scipy called directly, and another
    step-size control than torchdiffeq's dopri5 (other states and, on a network, another NFE): its own protocol."""
    import numpy as np
    from scipy.integrate import solve_ivp

    g = torch.Generator().manual_seed(0)
    a = torch.randn(3, 4, generator=g) * 0.8
    x = torch.randn(3, 4, generator=g)
    f = lambda z, t: torch.sin(3 * t[:, None]) * a * z + a.roll(1, 1)  # noqa: E731 - (B,) times, as samplers pass
    sol = rk45_scipy(f, x)

    def rhs(t, y):
        z = torch.tensor(y, dtype=torch.float32).reshape(x.shape)
        return f(z, torch.full((3,), t, dtype=torch.float32)).numpy().reshape(-1).astype(np.float64)

    ref = solve_ivp(rhs, (0.0, 1.0), x.numpy().reshape(-1), method="RK45", rtol=1e-5, atol=1e-5, t_eval=[0.0, 1.0])
    assert sol.nfe == ref.nfev
    torch.testing.assert_close(sol.sample, torch.tensor(ref.y[:, -1], dtype=torch.float32).reshape(x.shape),
                               rtol=0, atol=0)  # fmt: skip
    assert not torch.equal(rk45(f, x).sample, sol.sample)  # torchdiffeq's dopri5 steps otherwise


def test_bad_settings_are_clear_errors():
    with pytest.raises(MixedSourceError, match="beta must be >= 0"):
        MixedSourceFlow(beta=-1.0)
    with pytest.raises(MixedSourceError, match="unknown source signal kappa"):
        MixedSourceFlow(kappa="text")
    with pytest.raises(MixedSourceError, match="unknown method"):
        mixed_source_method("mixflow")


@pytest.mark.parametrize("name", ["rectified-flow", "fast-ode", "mixed-source", "mixed-source-rv"])
def test_loss_trains_source_through_the_draw(name):
    torch.manual_seed(0)
    velocity = torch.nn.Linear(3, 2)
    vel = lambda x, t, y: velocity(torch.cat([x, t[:, None]], 1))  # noqa: E731
    source = SourceMLP((2,), "image", hidden=16)
    torch.nn.init.normal_(source.output[1].weight, std=0.1)
    model = MixedSourceModel(type("V", (torch.nn.Module,), {"forward": lambda self, x, t, y: vel(x, t, y)})(), source)
    objective = mixed_source_method(name, beta=0.1)
    x1 = torch.randn(8, 2)
    r = objective.draw(8, (2,), torch.Generator().manual_seed(0))
    loss = objective.loss(model, x1, torch.zeros(8, dtype=torch.long), r)
    assert loss.shape == (8,)
    loss.mean().backward()
    grad = source.output[1].weight.grad
    if name == "rectified-flow":
        assert grad is None
        x0 = r["noise"]
        t = r["u_time"][:, None]
        want = (velocity(torch.cat([t * x1 + (1 - t) * x0, t], 1)) - (x1 - x0)).pow(2).mean(1)
        torch.testing.assert_close(loss, want)
    else:
        assert grad is not None and grad.abs().sum() > 0


def test_analyze_curvature_cli(tmp_path):
    """A zero-output velocity never moves (curvature 0); a constant-bias one moves straight (curvature 0 too)."""
    import json

    from click.testing import CliRunner

    from mixflow_bench.cli.analyze_cmd import command
    from mixflow_bench.models.toy_mlp import ToyVelocityMLP
    from mixflow_bench.toy.mixed_source_study import UnconditionalVelocity

    still = MixedSourceModel(UnconditionalVelocity(ToyVelocityMLP((2,), 1, hidden=16, depth=1, time_dim=8)), None)
    torch.save({"ema": still.state_dict()}, tmp_path / "still.pt")
    bent = MixedSourceModel(UnconditionalVelocity(ToyVelocityMLP((2,), 1, hidden=16, depth=1, time_dim=8)), None)
    torch.nn.init.normal_(bent.velocity.net.output[1].weight)
    torch.save({"ema": bent.state_dict()}, tmp_path / "bent.pt")
    out = tmp_path / "out"
    args = ["curvature", "--dataset", "toy2d", "--checkpoint", f"still={tmp_path}/still.pt",
            "--checkpoint", f"bent={tmp_path}/bent.pt", "--num", "32", "--steps", "8", "--out", str(out)]
    result = CliRunner().invoke(command, args)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "curvature.json").read_text())["models"]
    assert summary["still"]["mean_curvature"] == 0.0 and summary["bent"]["mean_curvature"] > 0
    assert (out / "curvature.png").stat().st_size > 0
    bad = CliRunner().invoke(command, ["curvature", "--dataset", "digits", "--checkpoint", f"a={tmp_path}/still.pt"])
    assert bad.exit_code != 0 and "not digits" in bad.output and "Traceback" not in bad.output


def test_energy_distance_matches_scipy_in_one_dimension():
    from scipy.stats import energy_distance as scipy_energy

    from mixflow_bench.toy.mixed_source_study import energy_distance

    g = torch.Generator().manual_seed(3)
    a, b = torch.randn(300, 1, generator=g), 0.5 + 2 * torch.randn(200, 1, generator=g)
    want = scipy_energy(a[:, 0].numpy(), b[:, 0].numpy()) ** 2  # scipy returns the square root
    assert abs(energy_distance(a, b) - want) < 1e-9


def test_study_variants_and_clear_recipe_errors():
    from click.testing import CliRunner

    from mixflow_bench.cli.reproduce_cmd import command
    from mixflow_bench.recipes.loader import load_recipe
    from mixflow_bench.toy.mixed_source_study import variants_of

    keys = [v.key for v in variants_of(load_recipe("mixed-source-toy2d"))]
    assert keys[0] == "rectified-flow" and "fast-ode@beta=0.1" in keys and "mixed-source-rv@beta=0.1" in keys
    assert sum(k.startswith("mixed-source@") for k in keys) == 3
    for override, message in (("mixed_source.kappa=text", "one of 'image', 'class', 'noise'"),
                              ("mixed_source.betas=[-0.1]", "beta must be >= 0"),
                              ("mixed_source.methods=[mixflow]", "unknown method 'mixflow'")):
        result = CliRunner().invoke(command, ["mixed-source-toy2d", override])
        assert result.exit_code != 0 and message in result.output, result.output
        assert "Traceback" not in result.output
    plan = CliRunner().invoke(command, ["mixed-source-digits", "--plan"])
    assert plan.exit_code == 0 and "18 CPU training runs" in plan.output
