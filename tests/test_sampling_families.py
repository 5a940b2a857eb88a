"""Model family sampling rules reach `sample --model` and `--cfg`; `--sampler heun` is the family's own Heun."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

from mixflow_bench.models.zoo import get_spec
from mixflow_bench.recipes.schema import GuidanceSection, SampleSection
from mixflow_bench.sampling.velocity import build_velocity, integrate

torch.set_num_threads(1)


def _sampled(monkeypatch, args: list[str]) -> dict:
    """The ``sample:`` settings `mixflow-bench sample ARGS` hands to its task (nothing is run)."""
    from mixflow_bench.cli.main import cli
    from mixflow_bench.launch import local

    seen: dict = {}
    monkeypatch.setattr(local.LocalLauncher, "run", lambda self, task: seen.setdefault("task", task))
    result = CliRunner().invoke(cli, ["sample", *args, "--random-init", "--out", "x.npz"])
    assert result.exit_code == 0, result.output
    return seen["task"].args["sample"]


def _guidance(sample: dict) -> tuple:
    g = sample["guidance"]
    interval = None if g["interval"] is None else tuple(g["interval"])
    return g["kind"], g["scale"], g["channels"], interval, g["guide_model"]


@pytest.mark.parametrize(
    "args, guidance, quantize",
    [
        (["--model", "sit-xl-2", "--cfg", "1.5"], ("cfg", 1.5, 3, None, None), "round"),
        (["sit-xl-256", "--cfg", "1.5"], ("cfg", 1.5, 3, None, None), "round"),
        (["--model", "repa-sit-xl-2", "--cfg", "1.8"], ("cfg", 1.8, None, (0.0, 0.7), None), "truncate"),
        (["repa-256", "--cfg", "1.8"], ("cfg", 1.8, None, (0.0, 0.7), None), "truncate"),
        (["--model", "rae-dith-xl-256", "--cfg", "1.42"], ("autoguidance", 1.42, None, None, "rae-dith-s-256"),
         "truncate"),
        (["rae-512", "--cfg", "1.5"], ("autoguidance", 1.5, None, None, "rae-dith-s-512"), "truncate"),
        (["--model", "sit-xl-2"], ("none", 1.0, None, None, None), "round"),
        (["sit-xl-256-cfg", "--cfg", "1.0"], ("none", 1.0, 3, None, None), "round"),
    ],
)  # fmt: skip
def test_cfg_takes_the_model_family_rules(monkeypatch, args, guidance, quantize) -> None:
    sample = _sampled(monkeypatch, args)
    assert _guidance(sample) == guidance
    assert sample["quantize"] == quantize


def test_model_defaults_are_the_family_protocol(monkeypatch) -> None:
    rae = _sampled(monkeypatch, ["--model", "rae-dith-xl-512"])
    assert (rae["sampler"], rae["steps"], rae["time_shift"], rae["labels"]) == ("rae-euler", 50, "auto", "equal")
    sit = _sampled(monkeypatch, ["--model", "sit-b-2"])
    assert (sit["sampler"], sit["steps"], sit["last_step_size"], sit["labels"]) == ("sde", 250, 0.04, "uniform")
    toy = _sampled(monkeypatch, ["--model", "toy-mlp", "--cfg", "2"])
    assert (toy["sampler"], toy["steps"], _guidance(toy)) == ("euler", 50, ("cfg", 2.0, None, None, None))


def test_explicit_settings_override_the_family_rules(monkeypatch) -> None:
    sample = _sampled(monkeypatch, ["--model", "sit-xl-2", "sample.guidance.channels=4", "sample.quantize=truncate",
                                    "--cfg", "1.5"])  # fmt: skip
    assert _guidance(sample) == ("cfg", 1.5, 4, None, None) and sample["quantize"] == "truncate"
    sample = _sampled(monkeypatch, ["sit-xl-256-cfg", "sample.guidance.channels=null"])
    assert _guidance(sample) == ("cfg", 1.5, None, None, None)
    sample = _sampled(monkeypatch, ["repa-256-cfg", "sample.guidance.interval=null", "--cfg", "2.0"])
    assert _guidance(sample) == ("cfg", 2.0, None, None, None)
    sample = _sampled(monkeypatch, ["--model", "rae-dith-xl-256", "--guidance", "cfg", "--cfg", "1.5"])
    assert _guidance(sample)[:4] == ("cfg", 1.5, None, None)


def test_autoguidance_without_a_guide_is_one_clear_error(monkeypatch) -> None:
    from mixflow_bench.cli.main import cli

    result = CliRunner().invoke(cli, ["sample", "--model", "sit-xl-2", "--guidance", "autoguidance", "--cfg", "2"])
    assert result.exit_code != 0 and "guide_model" in result.output and "Traceback" not in result.output


def test_recipes_and_cli_share_the_family_source() -> None:
    from mixflow_bench.recipes import load_recipe
    from mixflow_bench.recipes.families import sample_defaults

    pairs = (("sit-xl-256-sde", "sit-xl-2"), ("repa-256-sde", "repa-sit-xl-2"), ("rae-256", "rae-dith-xl-256"))
    for recipe, model in pairs:  # the recipes that sample with the families' own sampler
        r = load_recipe(recipe)
        assert get_spec(model).sampler_defaults == sample_defaults(model)
        for key, value in sample_defaults(model).items():
            assert getattr(r.sample, key) == value, (recipe, key)


# --- the families' Heun samplers against independent references ------------------------------------------------
def _toy_model(x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """A class- and time-dependent velocity field (null label 1000 included)."""
    c = torch.sin(0.37 * y.to(x.dtype)).view(-1, 1, 1, 1)
    t = t.to(x.dtype).view(-1, 1, 1, 1)
    return torch.tanh(x) * (1.0 + c) - x * (0.5 + t) + c * torch.cos(3.0 * t)


def _start() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(3, 4, 4, 4, generator=torch.Generator().manual_seed(0)), torch.tensor([3, 17, 999])


def _reference_repa_heun(x0, y, steps, scale, lo, hi):
    """REPA's Heun written from its formula: float64 state, the corrector guided as at t_cur, last step Euler."""

    def v(x, t, guided):
        xs = x.float()
        ts = torch.full((x.shape[0],), t, dtype=torch.float32)
        cond = _toy_model(xs, ts, y).double()
        if not guided:
            return cond
        uncond = _toy_model(xs, ts, torch.full_like(y, 1000)).double()
        return uncond + scale * (cond - uncond)

    times = [1.0 - i / steps for i in range(steps + 1)]
    x = x0.double()
    for i in range(steps):
        t0, t1 = times[i], times[i + 1]
        guided = scale > 1.0 and lo <= t0 <= hi
        d0 = v(x, t0, guided)
        if i == steps - 1:
            x = x + (t1 - t0) * d0
        else:
            d1 = v(x + (t1 - t0) * d0, t1, guided)
            x = x + (t1 - t0) * (d0 + d1) / 2
    return x.float()


@pytest.mark.parametrize("scale, interval", [(1.8, (0.0, 0.7)), (1.5, None), (1.0, None)])
def test_repa_heun_matches_its_formula(scale, interval) -> None:
    spec = get_spec("repa-sit-xl-2")
    x0, y = _start()
    kind = "cfg" if scale != 1.0 else "none"
    cfg = SampleSection(sampler="heun", steps=8, guidance=GuidanceSection(kind=kind, scale=scale, interval=interval))
    got = integrate(spec, build_velocity(spec, _toy_model, y, cfg), x0, cfg)
    lo, hi = interval or (0.0, 1.0)
    torch.testing.assert_close(got, _reference_repa_heun(x0, y, 8, scale, lo, hi), rtol=1e-6, atol=1e-6)


def _torchdiffeq_heun2(velocity, x0: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    from torchdiffeq import odeint

    def func(t, x):
        return velocity(x, torch.full((x.shape[0],), float(t), dtype=x.dtype))

    return odeint(func, x0, grid.to(x0.dtype), method="heun2")[-1]


def test_sit_heun_is_torchdiffeq_heun2_with_three_channel_cfg() -> None:
    from mixflow_bench.flow import classifier_free

    spec = get_spec("sit-xl-2")
    x0, y = _start()
    cfg = SampleSection(sampler="heun", steps=6, guidance=GuidanceSection(kind="cfg", scale=1.5, channels=3))
    got = integrate(spec, build_velocity(spec, _toy_model, y, cfg), x0, cfg)
    ref = _torchdiffeq_heun2(classifier_free(_toy_model, y, 1.5, channels=3), x0, torch.linspace(0, 1, 7))
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


def test_rae_heun_runs_on_the_shifted_grid() -> None:
    from mixflow_bench.flow import rae_grid, rae_shift_factor

    spec = get_spec("rae-dith-s-256")
    x0, y = _start()
    cfg = SampleSection(sampler="heun", steps=5, time_shift="auto")
    got = integrate(spec, build_velocity(spec, _toy_model, y, cfg), x0, cfg)
    grid = rae_grid(6, rae_shift_factor(768, 16, 16))
    ref = _torchdiffeq_heun2(lambda x, t: _toy_model(x, t, y), x0, grid)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
