"""Stage skip logic: unchanged stages are skipped, a changed setting reruns its stage and those after it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mixflow_bench.pipeline.reproduce import DestructiveChangeError, plan, reproduce

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
    # finished samples are not deleted without force, and the message says what would be
    with pytest.raises(DestructiveChangeError, match=r"sample\.seed: 0 -> 5.*deletes .*mixflow\.npz.*--force"):
        reproduce("tiny-digits", overrides=changed, run_dir=run)
    assert samples.stat().st_mtime_ns == stamp
    third = reproduce("tiny-digits", overrides=changed, run_dir=run, force=True)
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


@pytest.mark.timeout(240)
def test_result_neutral_settings_and_extended_training(tmp_path):
    """Batch and shard sizes keep finished samples; more training steps continue from the last checkpoint and
    give the same weights as one run of that length; training from scratch is reproducible."""
    import torch

    short = {"train": {"steps": 20, "checkpoint_every": 10}, "sample": {"num": 32, "steps": 4}}
    run = tmp_path / "run"
    reproduce("tiny-digits", overrides=short, run_dir=run)
    samples = run / "samples" / "mixflow.npz"
    stamp = samples.stat().st_mtime_ns
    neutral = {"train": {"steps": 20, "checkpoint_every": 5}, "sample": {"num": 32, "steps": 4, "batch_size": 8,
                                                                            "shard_size": 8}}  # fmt: skip
    assert set(reproduce("tiny-digits", overrides=neutral, run_dir=run).values()) == {"skipped"}
    assert samples.stat().st_mtime_ns == stamp

    longer = {"train": {"steps": 40, "checkpoint_every": 10}, "sample": {"num": 32, "steps": 4}}
    _, _, rows = plan("tiny-digits", longer, run)
    assert {s.name: st for s, st in rows}["train"] == "extend"
    with pytest.raises(DestructiveChangeError, match="mixflow.npz"):  # the old samples come from the old model
        reproduce("tiny-digits", overrides=longer, run_dir=run)  # training extends, then sampling refuses
    assert samples.stat().st_mtime_ns == stamp
    _, _, rows = plan("tiny-digits", longer, run)
    assert {s.name: st for s, st in rows}["train"] == "done"
    reproduce("tiny-digits", overrides=longer, run_dir=run, force=True)

    direct = tmp_path / "direct"
    reproduce("tiny-digits", overrides=longer, run_dir=direct, only_stage="train")
    a, b = torch.load(run / "train" / "model.pt"), torch.load(direct / "train" / "model.pt")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    fewer = {"train": {"steps": 10, "checkpoint_every": 10}, "sample": {"num": 32, "steps": 4}}
    with pytest.raises(DestructiveChangeError, match=r"train\.steps: 40 -> 10.*deletes .*train"):
        reproduce("tiny-digits", overrides=fewer, run_dir=run)


def test_training_from_scratch_is_reproducible(tmp_path):
    """The model is built after the training seed is set: two runs from scratch give identical weights."""
    import torch

    from mixflow_bench.pipeline.tasks import train_task

    ov = {"train": {"steps": 2, "checkpoint_every": 2}}
    a = torch.load(train_task("tiny-digits", ov, str(tmp_path / "a")))
    torch.manual_seed(12345)  # whatever state the process's RNG is in
    b = torch.load(train_task("tiny-digits", ov, str(tmp_path / "b")))
    assert all(torch.equal(a[k], b[k]) for k in a)
    c = torch.load(train_task("tiny-digits", {"train": {"steps": 2, "checkpoint_every": 2, "seed": 1}},
                              str(tmp_path / "c")))  # fmt: skip
    assert not all(torch.equal(a[k], c[k]) for k in a)
