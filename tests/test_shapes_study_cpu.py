"""The GPU shapes study's code path, run on the CPU at toy size: the whole study end to end, and a run split at
the base training through a base checkpoint equals the same run in one go."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mixflow_bench.toy.shapes_study import ShapesStudyConfig, main, run_shapes_study

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
    assert ckpt.exists() and first["base_checkpoint"] == {"written": str(ckpt), "base_steps": 4}
    assert not first_samples and "slow_flow" not in first  # stopped after the base training
    second, second_samples = run(tmp_path, "second", base_checkpoint=str(ckpt))
    assert second["base_checkpoint"] == {"loaded": str(ckpt), "base_steps": 4}
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
