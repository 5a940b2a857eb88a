"""One of two torchrun ranks SIGKILLed mid-sampling and mid-training (gloo, CPU), through the real CLI.

The launch must stop on its own within :data:`STOP_BOUND_S` (torchrun stops the surviving rank), say what
happened in one line (which rank died, how), keep what was finished (shards, checkpoints), and a rerun of the
same command must resume to the output of an uninterrupted run. The kill waits for files (a shard, a
checkpoint), never for time.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mixflow_bench.pipeline.tasks import sample_task
from mixflow_bench.recipes.loader import load_recipe

REPO = Path(__file__).resolve().parents[1]
STOP_BOUND_S = 60.0  # measured on 2 CPU cores: 0.6-1.8 s from the SIGKILL to the CLI's exit
SAMPLE = {"num": 64, "shard_size": 4, "batch_size": 4, "sampler": "sde", "steps": 60}
TRAIN_STEPS, CHECKPOINT_EVERY = 400, 50  # about 3 s of training after the first checkpoint, 7 ms a step


def _env() -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    return env


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "mixflow_bench", *args, "--launcher", "torchrun", "--nproc", "2"]


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # the process ended meanwhile
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:  # field 4, after the "(comm)" that may hold spaces
            found.append(int(entry.name))
    return found


def _rank_of(pid: int) -> int | None:
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    values = dict(item.split(b"=", 1) for item in environ if b"=" in item)
    return int(values[b"RANK"]) if b"RANK" in values else None


def _kill_rank_when(
    cli: list[str], ready, rank: int, logs: Path, timeout_s: float = 120.0
) -> tuple[subprocess.CompletedProcess, float]:
    """Start ``cli``; once ``ready()`` holds, SIGKILL the torchrun worker of ``rank`` (a grandchild of the CLI:
    CLI -> torchrun agent -> workers). Returns the finished launch and the seconds from the kill to its exit."""
    out, err = logs.with_suffix(".out"), logs.with_suffix(".err")
    with out.open("w") as stdout, err.open("w") as stderr:  # files, not pipes: a full pipe would stall the run
        proc = subprocess.Popen(cli, cwd=REPO, env=_env(), stdout=stdout, stderr=stderr, text=True)
    try:
        deadline = time.monotonic() + timeout_s
        while not ready():
            assert proc.poll() is None, "the launch ended before it could be interrupted:\n" + err.read_text()
            assert time.monotonic() < deadline, "nothing to interrupt appeared in time"
            time.sleep(0.02)
        workers = {_rank_of(w): w for agent in _children(proc.pid) for w in _children(agent)}
        os.kill(workers[rank], signal.SIGKILL)
        killed_at = time.monotonic()
        proc.wait(timeout=STOP_BOUND_S)  # raises TimeoutExpired on a hang
        stop_s = time.monotonic() - killed_at
        return subprocess.CompletedProcess(cli, proc.returncode, out.read_text(), err.read_text()), stop_s
    finally:
        if proc.poll() is None:
            for agent in _children(proc.pid):
                for worker in _children(agent):
                    os.kill(worker, signal.SIGKILL)
            proc.kill()
            proc.wait()


def _check_one_line_error(result: subprocess.CompletedProcess, rank: int) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr  # no wall of tracebacks, from torchrun or the ranks
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr
    assert f"rank {rank}" in errors[0] and "SIGKILL" in errors[0], errors[0]
    assert "rerun" in errors[0] or "resume" in errors[0], errors[0]
    assert len(result.stderr.strip().splitlines()) <= 3, result.stderr


@pytest.mark.timeout(240)
def test_rank_killed_mid_sampling_stops_and_rerun_gives_the_same_bytes(tmp_path):
    out = tmp_path / "s.npz"
    shards = tmp_path / "s.npz.shards"
    overrides = [f"sample.{k}={v}" for k, v in SAMPLE.items()]
    cli = _cli("sample", "tiny-digits", *overrides, "--out", str(out))
    result, stop_s = _kill_rank_when(cli, lambda: any(shards.glob("shard-*.npz")), rank=1, logs=tmp_path / "killed")
    print(f"sampling: launch exited {stop_s:.2f} s after the SIGKILL")
    _check_one_line_error(result, rank=1)
    done = {p.name: p.stat().st_mtime_ns for p in shards.glob("shard-*.npz")}
    assert not out.exists() and 1 <= len(done) < SAMPLE["num"] // SAMPLE["shard_size"]

    started = time.monotonic()
    subprocess.run(cli, cwd=REPO, env=_env(), check=True, capture_output=True)
    print(f"sampling: rerun took {time.monotonic() - started:.1f} s")
    assert {name: (shards / name).stat().st_mtime_ns for name in done} == done  # finished shards kept, not redone

    recipe = load_recipe("tiny-digits", None)
    reference = tmp_path / "reference.npz"  # uninterrupted, one process (sample i depends only on (seed, i))
    sample = {**dataclasses.asdict(recipe.sample), **SAMPLE, "shard_size": 64, "batch_size": 64}
    sample_task(dataclasses.asdict(recipe.model), sample, str(reference), progress=False)
    assert out.read_bytes() == reference.read_bytes()


def _log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "train" / "log.jsonl").read_text().splitlines()]


@pytest.mark.timeout(240)
def test_rank_killed_mid_training_stops_and_rerun_resumes_to_the_same_weights(tmp_path):
    from mixflow_bench.train.checkpoint import latest_checkpoint, load_checkpoint

    overrides = [f"train.steps={TRAIN_STEPS}", f"train.checkpoint_every={CHECKPOINT_EVERY}"]
    run = tmp_path / "killed"
    cli = _cli("train", "tiny-digits", *overrides, "--run-dir", str(run))
    result, stop_s = _kill_rank_when(
        cli, lambda: (run / "train" / "checkpoints" / "latest").exists(), rank=1, logs=tmp_path / "killed"
    )
    print(f"training: launch exited {stop_s:.2f} s after the SIGKILL")
    _check_one_line_error(result, rank=1)
    assert not (run / "train" / "model.pt").exists()
    resume_step = load_checkpoint(latest_checkpoint(run / "train"))["step"]  # the checkpoint is whole
    assert CHECKPOINT_EVERY <= resume_step < TRAIN_STEPS
    print(f"training: the rerun resumes from step {resume_step} of {TRAIN_STEPS}")
    logged = _log(run)
    assert [r["step"] for r in logged][: resume_step // CHECKPOINT_EVERY] == list(
        range(CHECKPOINT_EVERY, resume_step + 1, CHECKPOINT_EVERY)
    )

    rerun = subprocess.run(cli, cwd=REPO, env=_env(), capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert f"resuming from step {resume_step}" in rerun.stdout, rerun.stdout
    # the steps up to the checkpoint were not trained again: their log lines (with their timings) are kept
    assert _log(run)[: resume_step // CHECKPOINT_EVERY] == [r for r in logged if r["step"] <= resume_step]

    reference = tmp_path / "uninterrupted"
    subprocess.run(_cli("train", "tiny-digits", *overrides, "--run-dir", str(reference)), cwd=REPO, env=_env(),
                   check=True, capture_output=True)  # fmt: skip
    a = load_checkpoint(latest_checkpoint(reference / "train"))
    b = load_checkpoint(latest_checkpoint(run / "train"))
    assert a["step"] == b["step"] == TRAIN_STEPS and a["world_size"] == b["world_size"] == 2
    for part in ("model", "ema"):
        for name, tensor in a[part].items():
            assert torch.equal(b[part][name], tensor), f"{part}.{name}"  # exact: same world size, same reductions
    assert [(r["step"], r["loss"]) for r in _log(reference)] == [(r["step"], r["loss"]) for r in _log(run)]
    ema_a = torch.load(reference / "train" / "model.pt", weights_only=True)
    ema_b = torch.load(run / "train" / "model.pt", weights_only=True)
    assert all(torch.equal(ema_a[name], ema_b[name]) for name in ema_a)


def test_failure_summary_names_the_cause_first():
    from types import SimpleNamespace

    from mixflow_bench.launch.torchrun_agent import summary
    from mixflow_bench.launch.worker import lost_peer

    def failure(pid, exitcode, timestamp):
        name = {-9: "SIGKILL", -15: "SIGTERM"}.get(exitcode, "")
        return SimpleNamespace(pid=pid, exitcode=exitcode, timestamp=timestamp, signal_name=lambda: name)

    # the rank torchrun stopped is listed after the one that died, even with an earlier timestamp
    line = summary({0: failure(10, -15, 1.0), 1: failure(11, -9, 2.0)})
    assert line == "rank 1 (pid 11) was killed by SIGKILL; rank 0 (pid 10) was stopped (SIGTERM)"
    assert summary({1: failure(11, 1, 3.0)}) == "rank 1 (pid 11) exited with status 1"
    gloo = "[third_party/gloo/gloo/transport/tcp/pair.cc:545] Read error [127.0.0.1]:1: Connection reset by peer"
    assert lost_peer(RuntimeError(gloo)) and not lost_peer(RuntimeError("shape mismatch"))
    assert not lost_peer(ValueError("Connection reset by peer in a config value"))
