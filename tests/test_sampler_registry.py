"""The sampler registry is the one list of samplers: a sampler registered here (one function, one
``register_sampler`` line, no other file edited) is accepted by recipes, ``sample --sampler``, the result protocols
(NFE) and ``reproduce --plan``; and the merged Euler/Heun/RK45 solvers keep their numbers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from mixflow_bench.flow import counted_solvers
from mixflow_bench.flow import samplers as core
from mixflow_bench.samplers import SAMPLERS, Sampler, register_sampler, sampler_names, unregister_sampler

torch.set_num_threads(1)
CALLS: list[int] = []


def midpoint(spec, velocity, noise, cfg, step_noise=None):
    """The explicit midpoint rule on the uniform grid (2 evaluations per step): a sampler the project lacks."""
    grid = core.uniform_grid(cfg.steps, spec.convention).tolist()
    x = noise
    for t0, t1 in zip(grid[:-1], grid[1:]):
        h = t1 - t0
        mid = x + 0.5 * h * velocity(x, torch.full((len(x),), t0))
        x = x + h * velocity(mid, torch.full((len(x),), t0 + 0.5 * h))
        CALLS.append(2)
    return x


@pytest.fixture
def registered():
    register_sampler(Sampler("test-midpoint", midpoint, lambda steps, family: 2 * steps, "midpoint rule"))
    CALLS.clear()
    yield "test-midpoint"
    unregister_sampler("test-midpoint")


def test_a_registered_sampler_reaches_recipes_cli_protocol_and_plan(tmp_path, registered) -> None:
    from mixflow_bench.cli.main import cli
    from mixflow_bench.pipeline.estimate import sampling_nfe
    from mixflow_bench.recipes.schema import SampleSection
    from mixflow_bench.recipes.validate import RecipeError, build_dataclass
    from mixflow_bench.results.protocol import check_protocol, protocol_of

    section = build_dataclass(SampleSection, {"sampler": registered, "steps": 3}, "test")
    assert protocol_of(section, ["fid"])["nfe"] == 6 and sampling_nfe(section) == 6
    protocol = {**protocol_of(section, ["fid"]), "guidance": "none"}
    assert check_protocol(protocol, "none")[1] is None
    with pytest.raises(RecipeError, match="sampler"):
        build_dataclass(SampleSection, {"sampler": "no-such-sampler", "steps": 3}, "test")

    out = tmp_path / "m.npz"
    args = ["sample", "--model", "toy-mlp", "--random-init", "--num", "3", "--steps", "4", "--out", str(out)]
    result = CliRunner().invoke(cli, [*args, "--sampler", registered])
    assert result.exit_code == 0, result.output
    assert sum(CALLS) == 2 * 4 * 1  # 4 steps x 2 evaluations, one batch of 3
    assert np.load(out)["arr_0"].shape == (3, 8, 8, 3)


def test_an_unregistered_sampler_is_refused_in_one_line() -> None:
    from mixflow_bench.cli.main import cli

    result = CliRunner().invoke(cli, ["sample", "--model", "toy-mlp", "--random-init", "--sampler", "test-midpoint"])
    assert result.exit_code == 2 and "test-midpoint" in result.output and "Traceback" not in result.output


def test_every_builtin_sampler_resolves_and_counts() -> None:
    for name in sampler_names():
        assert callable(SAMPLERS[name].function()), name
    assert [SAMPLERS[n].nfe(50, None) for n in ("sde", "euler", "heun", "rae-euler", "manual-heun", "gm-ode2")] == [
        50, 50, 100, 49, 99, 50]  # fmt: skip
    assert SAMPLERS["heun"].nfe(50, "repa") == 99  # REPA's Heun ends on an Euler step
    assert SAMPLERS["dopri5"].nfe(50, None) is None and SAMPLERS["rk45"].assumed_nfe(1) == 125


# --- the merged solvers against the loops they replaced (written out here as the independent reference) ---------
def _field(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return torch.sin(3 * x) * (1 + t.reshape(-1, 1)) - x


def _old_euler(x, steps):
    times = torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64).tolist()
    for t0, t1 in zip(times[:-1], times[1:]):
        x = x + (t1 - t0) * _field(x, torch.full((x.shape[0],), t0))
    return x


def _old_manual_heun(x, steps):
    times = torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64).tolist()
    for i, (t0, t1) in enumerate(zip(times[:-1], times[1:])):
        h = t1 - t0
        k1 = _field(x, torch.full((x.shape[0],), t0))
        if i < steps - 1:
            x = x + 0.5 * h * (k1 + _field(x + h * k1, torch.full((x.shape[0],), t1)))
        else:
            x = x + h * k1
    return x


@pytest.mark.parametrize("steps", [1, 3, 7])
def test_merged_solvers_are_bit_identical_to_the_loops_they_replaced(steps) -> None:
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(steps))
    euler = counted_solvers.euler(_field, x, steps)
    assert torch.equal(euler.sample, _old_euler(x, steps)) and euler.nfe == steps and len(euler.trajectory) == steps + 1
    heun = counted_solvers.manual_heun(_field, x, steps)
    assert torch.equal(heun.sample, _old_manual_heun(x, steps)) and heun.nfe == 2 * steps - 1


def test_gm_samplers_declare_their_labels_and_which_draw_from_the_mixture():
    from mixflow_bench.results.protocol import study_protocol
    from mixflow_bench.samplers import SAMPLERS, sampler_names

    gm = {n: (SAMPLERS[n].display, SAMPLERS[n].samples_mixture) for n in sampler_names("gm")}
    assert gm == {"gm-sde": ("GM-SDE", True), "gm-sde2": ("GM-SDE 2", True), "gm-ode": ("GM-ODE", False),
                  "gm-ode2": ("GM-ODE 2", False)}  # fmt: skip
    assert not any(SAMPLERS[n].samples_mixture for n in sampler_names("velocity"))
    assert SAMPLERS["euler"].display == "euler"
    study = {"eval_steps": [4], "num_eval_samples": 100}
    assert study_protocol(study, ["fd"], "gm-sde2")["spectral"] is False
    assert "spectral" not in study_protocol(study, ["fd"], "gm-ode2")
