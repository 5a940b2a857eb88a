"""End-to-end runs on a real Slurm cluster (``.ci/slurm-up.sh``): reproduce the tiny recipe through submitit,
and requeue a running sampling job mid-way (``scontrol requeue``) and get the bytes of an uninterrupted run."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import time
import warnings
from pathlib import Path

import pytest

from mixflow_bench.launch import Task, get_launcher
from mixflow_bench.launch.slurm import slurm_available

pytestmark = pytest.mark.slurm

OK, WHY = slurm_available()
needs_slurm = pytest.mark.skipif(not OK, reason=f"no Slurm cluster: {WHY}")
SLURM = {"gpus_per_node": 0, "cpus_per_task": 1, "mem_gb": 2, "timeout_min": 10}


@pytest.fixture(autouse=True)
def _quiet_sacct():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*sacct.*")
        yield


@needs_slurm
@pytest.mark.timeout(420)
def test_reproduce_tiny_recipe_through_submitit(tmp_path):
    from mixflow_bench.pipeline.reproduce import reproduce

    run = tmp_path / "run"
    overrides = {"train": {"steps": 20}, "sample": {"num": 32, "steps": 4}}
    launcher = get_launcher("slurm", run_dir=run, slurm_overrides=SLURM)
    outcome = reproduce("tiny-digits", overrides=overrides, run_dir=run, launcher=launcher)
    assert outcome == {s: "ran" for s in ("download", "train", "sample-posttrained", "eval", "table")}
    table = json.loads((run / "table.json").read_text())
    assert table["rows"]["mixflow"]["fd-data"] > 0
    jobs = json.loads((run / "slurm" / "jobs.json").read_text())
    assert [j["stage"] for j in jobs] == ["train", "sample-posttrained", "eval"]
    for j in jobs:  # the work really ran inside Slurm jobs
        assert Path(j["stdout"]).exists()
        assert f"{j['job_id']}_0_result.pkl" in {p.name for p in Path(j["folder"]).iterdir()}
    from click.testing import CliRunner

    from mixflow_bench.cli.jobs_cmd import command

    deadline = time.monotonic() + 60
    while True:  # the result file is written just before the job's process exits
        listing = CliRunner().invoke(command, ["--run-dir", str(run), "--json"])
        states = {j["job_id"]: j["state"] for j in json.loads(listing.output)}
        if set(states.values()) <= {"COMPLETED"} or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert set(states) == {j["job_id"] for j in jobs} and set(states.values()) == {"COMPLETED"}, states


@needs_slurm
@pytest.mark.timeout(480)
def test_requeue_mid_sampling_is_byte_identical(tmp_path):
    from mixflow_bench.pipeline.tasks import sample_task
    from mixflow_bench.recipes.loader import load_recipe

    recipe = load_recipe("tiny-digits", None)
    model = dataclasses.asdict(recipe.model)
    sample = {**dataclasses.asdict(recipe.sample), "num": 96, "shard_size": 8, "batch_size": 4, "sampler": "sde",
              "steps": 150}  # fmt: skip
    out = tmp_path / "slurm.npz"
    launcher = get_launcher("slurm", run_dir=tmp_path, slurm_overrides=SLURM)
    job = launcher.submit(Task("sample", {"model": model, "sample": sample, "out": str(out), "progress": False}))
    shards = tmp_path / "slurm.npz.shards"
    deadline = time.monotonic() + 240
    while len(list(shards.glob("shard-*.npz"))) < 2:
        assert not out.exists(), "the job finished before it could be requeued"
        assert time.monotonic() < deadline, "the job did not start"
        time.sleep(0.1)
    before = {p.name: p.stat().st_mtime_ns for p in shards.glob("shard-*.npz")}
    subprocess.run(["scontrol", "requeue", str(job.job_id)], check=True, timeout=30)
    # a requeued job waits for its begin time; let it start now
    time.sleep(1)
    subprocess.run(["scontrol", "update", f"JobId={job.job_id}", "StartTime=now"], timeout=30)
    launcher.wait(job, timeout_s=360)
    info = subprocess.run(["scontrol", "show", "job", str(job.job_id)], capture_output=True, text=True).stdout
    assert "Restarts=1" in info, info  # the job really ran twice
    assert len(before) < 12
    after = {p.name: p.stat().st_mtime_ns for p in shards.glob("shard-*.npz")}
    assert all(after[name] == stamp for name, stamp in before.items())  # kept, not redone
    ref = tmp_path / "local.npz"
    sample_task(model, {**sample, "shard_size": 96, "batch_size": 96}, str(ref), progress=False)
    assert out.read_bytes() == ref.read_bytes()
