"""The regime study: snapshots of one base training equal shorter runs, the gains are paired differences of the
cells' FDs, and every sentence of the generated summary follows its JSON (numbers and comparisons)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from mixflow_bench.experiments.regime import run_regime_study
from mixflow_bench.experiments.regime_report import regime_sentences
from mixflow_bench.models.toy_mlp import ToyVelocityMLP
from mixflow_bench.recipes.loader import load_recipe
from mixflow_bench.toy.ensemble import Ensemble, Member, train_ensemble

TINY = {"regime": {"widths": [8, 16], "depth": 1, "base_steps": [3, 6], "posttrain_steps": [2, 3],
                   "gammas": [0.5, 0.8], "seeds": [0, 1], "eval_steps": [2, 4], "batch_size": 16,
                   "num_eval_samples": 64, "slow_flow_samples": 16, "slow_flow_steps": 4}}  # fmt: skip


def test_snapshot_equals_a_run_of_that_length():
    x, y = torch.randn(64, 2), torch.zeros(64, dtype=torch.long)
    template = ToyVelocityMLP((2,), 1, hidden=8, depth=1)
    kw = dict(batch_size=8, lr=1e-2, ema_decay=0.9, grad_clip=1.0, stage_seed=1)
    members = [Member(0, "a"), Member(1, "b")]
    long = train_ensemble(Ensemble(template, [template.state_dict()] * 2), members, x, y, steps=5, snapshots=(3,), **kw)
    short = train_ensemble(Ensemble(template, [template.state_dict()] * 2), members, x, y, steps=3, **kw)
    for k in short.ema:
        ema, weights = long.snapshots[3]
        assert torch.equal(ema[k], short.ema[k]) and torch.equal(weights[k], short.weights[k])


@pytest.fixture(scope="module")
def tiny_result(tmp_path_factory):
    out = tmp_path_factory.mktemp("regime")
    return run_regime_study(load_recipe("regime-digits", TINY), out), out


def test_gains_are_paired_fd_differences(tiny_result):
    result, out = tiny_result
    assert (out / "regime.png").stat().st_size > 0 and json.loads((out / "regime.json").read_text()) == result
    cells = {(c["width"], c["base_steps"], c["seed"], c["method"]): c for c in result["cells"]}
    assert len(cells) == 2 * 2 * 2 * 4  # widths x lengths x seeds x (2 controls + 2 gammas)
    for g in result["gains"]:
        arm = f"mixflow-g{g['gamma']:g}"
        d = [cells[(g["width"], g["base_steps"], s, g["control"])]["fd"][str(g["nfe"])]
             - cells[(g["width"], g["base_steps"], s, arm)]["fd"][str(g["nfe"])] for s in result["seeds"]]  # fmt: skip
        assert g["gain_mean"] == pytest.approx(np.mean(d)) and g["gain_std"] == pytest.approx(np.std(d, ddof=1))
        beyond = min(d) > 0 and np.mean(d) > 2 * np.std(d, ddof=1) / np.sqrt(len(d))
        assert g["beyond_spread"] == beyond


def test_every_summary_sentence_follows_the_json(tiny_result):
    result, out = tiny_result
    sentences = regime_sentences(result)
    assert (out / "summary.md").read_text().strip() == "\n".join(f"* {s}" for s in sentences)
    gains = [g for g in result["gains"] if g["control"] == "fm-beta"]
    win = [g for g in gains if g["beyond_spread"]]
    checked = 0
    for s in sentences:
        if s.startswith("Grid:"):
            assert f"{len(gains)} cells per control" in s and f"{len(result['seeds'])} seeds" in s
        elif s.startswith("MixFlow beats the time-law control"):
            assert f"in {len(win)} of {len(gains)} cells" in s
            for width, base, _post, gamma, nfes in re.findall(
                r"width (\d+), (\d+)\+(\d+) steps, γ = ([\d.]+): NFE ([\d, ]+) \(", s
            ):
                listed = [g for g in win if (g["width"], g["base_steps"], g["gamma"]) == (int(width), int(base),
                                                                                        float(gamma))]  # fmt: skip
                assert [str(g["nfe"]) for g in sorted(listed, key=lambda g: g["nfe"])] == nfes.split(", ")
        elif s.startswith("No cell was found"):
            assert not win and f"{len(gains)} cells tried" in s
        elif s.startswith("MixFlow loses to fm-beta on every seed"):
            assert f"in {sum(g['gain_max'] < 0 for g in gains)} of {len(gains)} cells" in s
        elif s.startswith("Against the uniform-time control"):
            uni = [g for g in result["gains"] if g["control"] == "fm-control" and g["beyond_spread"]]
            assert f"in {len(uni)} of {len(gains)} cells (against fm-beta: {len(win)})" in s
        elif s.startswith("Measured lag"):
            settings = {(g["width"], g["base_steps"], g["gamma"]): g["lag_mixflow"] < g["lag_control"] for g in gains}
            assert f"below fm-beta's in {sum(settings.values())} of {len(settings)}" in s
        elif s.startswith("Run time:"):
            assert f"{result['seconds']['total_wall']:.0f} s wall" in s
        else:
            raise AssertionError(f"no check for: {s}")
        checked += 1
    assert checked == len(sentences) >= 6
