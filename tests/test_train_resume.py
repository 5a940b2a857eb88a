"""Exact resume: an interrupted and resumed CPU run ends bit-identical to an uninterrupted one.

Run as a script (``python tests/test_train_resume.py OUT THREADS CLIP``) it trains and kills itself with
SIGKILL after step 6, two steps past the checkpoint at step 4.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mixflow_bench.train.batches import InMemoryBatches
from mixflow_bench.train.checkpoint import latest_checkpoint, load_checkpoint
from mixflow_bench.train.engine import TrainConfig, train

sys.path.insert(0, str(Path(__file__).parent))
from test_train_support import FlowMatchingObjective, make_data, make_model  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
STEPS, KILL_AT = 10, 6


def _config(clip: float | None) -> TrainConfig:
    return TrainConfig(
        steps=STEPS,
        global_batch_size=8,
        lr=1e-2,
        weight_decay=0.01,
        ema_decay=0.8,
        grad_clip=clip,
        lr_schedule="cosine",
        warmup_steps=2,
        final_lr=1e-3,
        checkpoint_every=4,
        keep_last=2,
        log_every=1,
        seed=7,
    )


def _run(out: Path, clip: float | None, *, model_seed: int = 0, device: str | None = None, **kwargs) -> torch.nn.Module:
    x, y = make_data(40)
    model = make_model(model_seed, dropout=0.2)  # dropout draws from the global torch RNG
    train(
        model,
        FlowMatchingObjective(),
        InMemoryBatches(x, y, 8, seed=3),
        dataclasses.replace(_config(clip), device=device),
        out,
        progress=False,
        extra={"recipe": "resume-test"},
        **kwargs,
    )
    return model


def _assert_same_run(reference: Path, resumed: Path) -> None:
    a = load_checkpoint(latest_checkpoint(reference))
    b = load_checkpoint(latest_checkpoint(resumed))
    assert a["step"] == b["step"] == STEPS
    for part in ("model", "ema"):
        assert a[part].keys() == b[part].keys()
        for name in a[part]:
            assert torch.equal(a[part][name], b[part][name]), f"{part}.{name} differs"
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    assert sa.keys() == sb.keys()
    for index in sa:
        for key in sa[index]:
            assert torch.equal(sa[index][key], sb[index][key]), f"optimizer state {index}.{key} differs"
    assert a["data"] == b["data"]
    assert torch.equal(a["rng"][0]["generator"], b["rng"][0]["generator"])
    assert torch.equal(a["rng"][0]["torch"], b["rng"][0]["torch"])

    def logs(path: Path) -> list[tuple]:
        lines = [json.loads(line) for line in (path / "log.jsonl").read_text().splitlines()]
        return [(r["step"], r["loss"], r["grad_norm"], r["lr"]) for r in lines]

    assert logs(reference) == logs(resumed)  # identical values, no step logged twice
    assert [r[0] for r in logs(resumed)] == list(range(1, STEPS + 1))


@pytest.mark.parametrize("clip", [None, 0.05])
def test_stop_and_resume_is_bit_identical(tmp_path: Path, clip: float | None) -> None:
    _run(tmp_path / "ref", clip)
    _run(tmp_path / "cut", clip, stop_after=KILL_AT)
    assert load_checkpoint(latest_checkpoint(tmp_path / "cut"))["step"] == 4
    torch.manual_seed(999)  # disturb the global RNG: resume must restore it
    _run(tmp_path / "cut", clip, model_seed=5)  # another init: the checkpoint must overwrite it
    _assert_same_run(tmp_path / "ref", tmp_path / "cut")


def test_killed_process_resumes_bit_identical(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, __file__, str(tmp_path / "cut"), str(torch.get_num_threads()), "0.05"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    ckpts = sorted(p.name for p in (tmp_path / "cut" / "checkpoints").iterdir())
    assert ckpts == ["latest", "step-0000004.pt"]
    _run(tmp_path / "ref", 0.05)
    _run(tmp_path / "cut", 0.05)
    _assert_same_run(tmp_path / "ref", tmp_path / "cut")


def test_resume_refuses_other_batch_size(tmp_path: Path) -> None:
    _run(tmp_path / "run", None, stop_after=4)
    x, y = make_data(40)
    config = TrainConfig(steps=STEPS, global_batch_size=4, seed=7)
    with pytest.raises(ValueError, match="global_batch_size=8"):
        train(
            make_model(),
            FlowMatchingObjective(),
            InMemoryBatches(x, y, 4, seed=3),
            config,
            tmp_path / "run",
            progress=False,
        )


def test_fresh_run_refuses_dir_with_checkpoints_and_drops_torn_log_line(tmp_path: Path) -> None:
    _run(tmp_path / "run", None, stop_after=5)
    with (tmp_path / "run" / "log.jsonl").open("a") as handle:
        handle.write('{"step": 6, "lo')  # a kill in the middle of a log write
    with pytest.raises(ValueError, match="already holds checkpoints"):
        _run(tmp_path / "run", None, resume=False)
    _run(tmp_path / "run", None)
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, STEPS + 1))


if __name__ == "__main__":
    out, threads, clip = Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    torch.set_num_threads(threads)

    def kill(record: dict) -> None:
        if record["step"] == KILL_AT:
            os.kill(os.getpid(), signal.SIGKILL)

    _run(out, clip, on_log=kill)
