"""Stage skip logic: unchanged stages are skipped, a changed setting reruns its stage and those after it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mixflow_bench.pipeline.reproduce import plan, reproduce

FAST = {"train": {"steps": 20}, "sample": {"num": 32, "steps": 4}}


@pytest.mark.timeout(180)
def test_skip_and_rerun(tmp_path):
    run = tmp_path / "run"
    first = reproduce("tiny-digits", overrides=FAST, run_dir=run)
    assert set(first.values()) == {"ran"}
    table = json.loads((run / "table.json").read_text())
    fd = table["rows"]["mixflow"]["fd-data"]
    assert np.isfinite(fd) and fd > 0
    record = json.loads((run / "results" / "tiny-digits-mixflow.json").read_text())
    assert record["metrics"]["fd-data"] == fd and record["schema"] == "mixflow-bench/result/v1"

    samples = run / "samples" / "mixflow.npz"
    stamp = samples.stat().st_mtime_ns
    again = reproduce("tiny-digits", overrides=FAST, run_dir=run)
    assert set(again.values()) == {"skipped"}
    assert samples.stat().st_mtime_ns == stamp

    changed = {**FAST, "sample": {"num": 32, "steps": 4, "seed": 5}}
    _, _, rows = plan("tiny-digits", changed, run)
    assert {s.name: st for s, st in rows}["sample-posttrained"] == "changed"
    third = reproduce("tiny-digits", overrides=changed, run_dir=run)
    assert third == {"download": "skipped", "train": "skipped", "sample-posttrained": "ran", "eval": "ran",
                     "table": "ran"}  # fmt: skip
    assert not np.array_equal(np.load(samples)["arr_0"], np.zeros(1))

    # an input changed behind the manifest's back (retrained weights) reruns sampling
    import torch

    state = torch.load(run / "train" / "model.pt")
    state[next(iter(state))] += 1.0
    torch.save(state, run / "train" / "model.pt")
    _, _, rows = plan("tiny-digits", changed, run)
    assert {s.name: st for s, st in rows}["sample-posttrained"] == "changed"


def test_only_stage_and_unknown_stage(tmp_path):
    with pytest.raises(ValueError, match="no stage 'paint'"):
        reproduce("tiny-digits", overrides=FAST, run_dir=tmp_path, only_stage="paint")
    out = reproduce("tiny-digits", overrides=FAST, run_dir=tmp_path, only_stage="train")
    assert out == {"train": "ran"} and (tmp_path / "train" / "model.pt").exists()
