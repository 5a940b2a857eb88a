"""The GPU shapes study's code path, run on the CPU at toy size: the whole study end to end, and a run split at
the base training through a base checkpoint equals the same run in one go."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mixflow_bench.experiments.shapes import ShapesStudyConfig, main, run_shapes_study

TINY = dict(model_overrides={"depth": 1}, num_train=256, num_reference=128, num_eval=64, batch_size=16,
            base_steps=4, post_steps=2, gammas=[0.5], ode_nfe=[2], sde_steps=0, slow_flow_samples=16,
            slow_flow_steps=2, sample_batch=64, train_budget_s=1e9, bf16=False, warmup_steps=2)  # fmt: skip


def run(tmp: Path, name: str, **extra) -> tuple[dict, dict]:
    result = run_shapes_study(ShapesStudyConfig(**TINY, **extra), tmp / name, None, "cpu")
    npz = tmp / name / "samples.npz"
    return result, (dict(np.load(npz)) if npz.exists() else {})


def test_split_at_the_base_checkpoint_equals_one_run(tmp_path):
    whole, whole_samples = run(tmp_path, "whole")
    ckpt = tmp_path / "base.pt"
    first, first_samples = run(tmp_path, "first", base_checkpoint=str(ckpt), stop_after_base=True)
    assert ckpt.exists() and first["base_checkpoint"] == {"written": [str(ckpt)], "base_steps": 4}
    assert not first_samples and "slow_flow" not in first  # stopped after the base training
    second, second_samples = run(tmp_path, "second", base_checkpoint=str(ckpt))
    assert second["base_checkpoint"] == {"loaded": [str(ckpt)], "base_steps": 4}
    assert "base" not in second["stages_s"]
    assert set(whole_samples) == set(second_samples) and len(whole_samples) > 1
    for key in whole_samples:  # every post-trained model samples the same images
        np.testing.assert_array_equal(whole_samples[key], second_samples[key], err_msg=key)
    assert json.dumps(whole["slow_flow"]) == json.dumps(second["slow_flow"])


def test_base_checkpoint_of_other_settings_is_one_clear_line(tmp_path, capsys):
    ckpt = tmp_path / "base.pt"
    run(tmp_path, "first", base_checkpoint=str(ckpt), stop_after_base=True)
    settings = {**TINY, "base_checkpoint": str(ckpt), "lr": 1e-3}
    args = ["--out", str(tmp_path / "other"), "--device", "cpu"]
    args += [f"--set={k}={json.dumps(v)}" for k, v in settings.items()]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "lr: checkpoint 0.0002 vs run 0.001" in err and "\n" not in err
    with pytest.raises(ValueError, match="stop_after_base needs base_checkpoint"):
        run_shapes_study(ShapesStudyConfig(**TINY, stop_after_base=True), tmp_path / "x", None, "cpu")


def test_seeds_split_per_seed_checkpoints_and_both_controls(tmp_path):
    """Two seeds: one base checkpoint per seed, both controls beside MixFlow, and a split run equals one go."""
    whole, _ = run(tmp_path, "whole", seeds=2)
    assert whole["seeds"] == [0, 1]
    curves = whole["slow_flow_per_seed"]
    assert set(curves["0"]["models"]) == {"baseline", "fm-control", "fm-beta", "mixflow-g0.5"}
    assert json.dumps(curves["0"]) != json.dumps(curves["1"])  # the seeds train different models
    ckpt = tmp_path / "base.pt"
    first, _ = run(tmp_path, "first", seeds=2, base_checkpoint=str(ckpt), stop_after_base=True)
    written = [str(tmp_path / "base-seed0.pt"), str(tmp_path / "base-seed1.pt")]
    assert first["base_checkpoint"]["written"] == written and all(Path(p).exists() for p in written)
    second, _ = run(tmp_path, "second", seeds=2, base_checkpoint=str(ckpt))
    assert second["base_checkpoint"]["loaded"] == written
    assert json.dumps(second["slow_flow_per_seed"]) == json.dumps(curves)


def test_time_law_control_draws_mixflow_times_without_slowing():
    """fm-beta's training inputs equal MixFlow's at gamma = 0 on the same draws (the same time law, no slowing)."""
    import torch

    from mixflow_bench.experiments.shapes import PATH, study_objectives
    from mixflow_bench.flow import mixflow

    objectives = study_objectives(ShapesStudyConfig(gammas=[0.5]))
    assert list(objectives) == ["fm-control", "fm-beta", "mixflow-g0.5"]
    gen = torch.Generator().manual_seed(0)
    x1, y = torch.randn(8, 3, 4, 4, generator=gen), torch.zeros(8, dtype=torch.long)
    draws = objectives["fm-beta"].draw(8, (3, 4, 4), gen)
    beta = objectives["fm-beta"].inputs(x1, y, draws)
    gamma0 = mixflow(PATH, gamma=0.0, null_label=objectives["fm-beta"].null_label).inputs(x1, y, draws)
    for a, b in zip(beta, gamma0):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    uniform = objectives["fm-control"].inputs(x1, y, draws)
    assert not torch.equal(uniform[1], beta[1])  # the uniform control is told other times


def test_paired_differences_and_t_quantiles_match_scipy():
    from scipy import stats

    from mixflow_bench.experiments.shapes import paired_difference, summarize_fid, t_quantile_975

    for df in (1, 2, 5, 30, 31, 60, 200):  # the table, then the expansion (4 significant digits)
        assert t_quantile_975(df) == pytest.approx(stats.t.ppf(0.975, df), rel=5e-4), df
    arm, control = [10.0, 12.5, 11.0], [11.0, 12.0, 13.5]
    d = np.subtract(arm, control)
    lo, hi = stats.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=stats.sem(d))
    got = paired_difference(arm, control)
    assert got["mean"] == pytest.approx(d.mean()) and got["ci95"] == pytest.approx([lo, hi], rel=5e-4)
    per_seed = {str(s): {"fm-beta": {"ode-10": control[s]}, "mixflow-g0.5": {"ode-10": arm[s]}} for s in range(3)}
    summary = summarize_fid(per_seed, ("fm-control", "fm-beta"))
    assert summary["paired"]["mixflow-g0.5"] == {"fm-beta": {"ode-10": got}}  # no fm-control cells: none
    assert summary["summary"]["fm-beta"]["ode-10"]["std"] == pytest.approx(np.std(control, ddof=1))


def test_fp8_path_on_a_device_without_fp8_is_recorded_not_fatal(tmp_path):
    result, _ = run(tmp_path, "prec", precision_paths=["exact", "fp8-compile"], precision_nfe=2)
    row = result["precision"]["models"]["mixflow-g0.5"]
    assert set(row) == {"exact", "fp8-compile"} and "error" in row["fp8-compile"]
