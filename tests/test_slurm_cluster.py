"""End-to-end runs on a real Slurm cluster (``.ci/slurm-up.sh``; skipped with a message when none answers):

- ``reproduce tiny-digits`` with 2 tasks per job (DDP training on gloo, sampling on 2 ranks) equals 1 rank, and a
  rerun after the submitting process was killed reattaches to its job instead of submitting it again;
- a cancelled or failed job stops ``reproduce`` within a minute with a message naming the job and its log;
- a sampling job whose tasks are killed mid-way, with shards still to do, and requeued resumes without losing or
  redoing any.

Every test cancels the jobs it submitted.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import pytest

from mixflow_bench.launch import Task, get_launcher
from mixflow_bench.launch.registry import slurm_state
from mixflow_bench.launch.slurm import SlurmJobError, slurm_available

sys.path.insert(0, str(Path(__file__).parent))
from multirank_checks import check_against_one_rank, cli_overrides, overrides, write_init_checkpoint  # noqa: E402

pytestmark = pytest.mark.slurm

OK, WHY = slurm_available()
needs_slurm = pytest.mark.skipif(not OK, reason=f"no Slurm cluster: {WHY}")
SLURM = {"gpus_per_node": 0, "cpus_per_task": 1, "mem_gb": 2, "timeout_min": 10}
SLURM_CLI = ["--launcher", "slurm", "--gpus-per-node", "0", "--cpus", "1", "--mem", "2", "--time", "10"]
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _quiet_sacct():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*sacct.*")
        yield


@pytest.fixture
def cancel_afterwards(tmp_path):
    """Job ids to cancel when the test ends (plus every job registered under tmp_path), whatever happened."""
    extra: list[str] = []
    yield extra
    registered = [j["job_id"] for p in tmp_path.rglob("jobs.json") for j in json.loads(p.read_text())]
    ids = sorted(set(extra) | set(registered))
    if ids:
        subprocess.run(["scancel", *ids], capture_output=True, timeout=30)


def _cli(*args: str) -> subprocess.Popen:
    """``python -m mixflow_bench ARGS`` from this checkout, in its own process."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    return subprocess.Popen([sys.executable, "-m", "mixflow_bench", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip


def _registered(run: Path, count: int = 1, timeout_s: float = 120) -> list[dict]:
    """The first ``count`` entries of the run's job registry, once they are there."""
    path = run / "slurm" / "jobs.json"
    deadline = time.monotonic() + timeout_s
    while True:
        jobs = json.loads(path.read_text()) if path.exists() else []
        if len(jobs) >= count:
            return jobs
        assert time.monotonic() < deadline, f"no job registered in {path} after {timeout_s} s"
        time.sleep(0.2)


def _until(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"{what}: not after {timeout_s} s"
        time.sleep(0.2)


def _step_running(job_id: str) -> bool:
    """Whether the job's task step (``JOB.0``, submitit's srun) is running."""
    out = subprocess.run(["squeue", "-h", "-s", "-j", job_id, "-o", "%i"], capture_output=True, text=True, timeout=30)
    return f"{job_id}.0" in out.stdout.split()


def _kill_tasks(job_id: str) -> None:
    """SIGKILL the job's tasks through Slurm (as the kernel's OOM killer or a node failure would end them): the
    job ends FAILED without their results."""
    subprocess.run(["scancel", "--signal=KILL", f"{job_id}.0"], check=True, timeout=30)


@needs_slurm
@pytest.mark.timeout(600)
def test_two_task_jobs_equal_one_rank_and_a_rerun_reattaches(tmp_path, cancel_afterwards):
    from rich.console import Console

    from mixflow_bench.pipeline.reproduce import reproduce

    init = write_init_checkpoint(tmp_path / "init.pt")
    run = tmp_path / "run"
    # hold the node with another job, so that the first training job stays queued while its submitter is killed
    blocker = subprocess.run(["sbatch", "--parsable", "-n", "1", "-c", "2", "-o", "/dev/null", "--wrap", "sleep 300"],
                             capture_output=True, text=True, check=True, timeout=30).stdout.strip()  # fmt: skip
    cancel_afterwards.append(blocker)
    _until(lambda: slurm_state(blocker) == "RUNNING", 240, "the node did not become free")
    first = _cli("reproduce", "tiny-digits", *cli_overrides(init), *SLURM_CLI, "--tasks-per-node", "2",
                 "--run-dir", str(run))  # fmt: skip
    try:
        train_job = _registered(run)[0]
    finally:
        first.kill()  # the submitting process dies
        first.communicate(timeout=60)
    assert slurm_state(train_job["job_id"]) == "PENDING"

    said = io.StringIO()
    launcher = get_launcher("slurm", run_dir=run, slurm_overrides={**SLURM, "tasks_per_node": 2})
    outcome: dict = {}

    def rerun_reproduce() -> None:
        console = Console(file=said, width=200)
        outcome.update(reproduce("tiny-digits", overrides=overrides(init), run_dir=run, launcher=launcher,
                                 console=console))  # fmt: skip

    rerun = threading.Thread(target=rerun_reproduce, daemon=True)
    rerun.start()
    _until(lambda: "reattached to Slurm job" in said.getvalue(), 60, "the rerun did not reattach")
    subprocess.run(["scancel", blocker], check=True, timeout=30)
    rerun.join(timeout=480)
    ran = {s: "ran" for s in ("train", "sample-baseline", "sample-posttrained", "eval", "table")}
    assert outcome == {"download": "skipped", **ran}, said.getvalue()  # the killed process did the download

    jobs = json.loads((run / "slurm" / "jobs.json").read_text())
    assert [j["stage"] for j in jobs] == ["train", "sample-baseline", "sample-posttrained", "eval", "eval"]
    assert jobs[0]["job_id"] == train_job["job_id"]  # one training job: the rerun waited on it
    assert [j["tasks"] for j in jobs] == [2, 2, 2, 1, 1]
    for j in jobs:  # every task of every job ran inside Slurm and left its result
        names = {p.name for p in Path(j["folder"]).iterdir()}
        assert {f"{j['job_id']}_{t}_result.pkl" for t in range(j["tasks"])} <= names
    assert json.loads((run / "table.json").read_text())["rows"]["mixflow"]["fd-data"] > 0
    check_against_one_rank(run, init, tmp_path)

    from click.testing import CliRunner

    from mixflow_bench.cli.jobs_cmd import command

    def states() -> set[str]:
        return {j["state"] for j in json.loads(CliRunner().invoke(command, ["--run-dir", str(run), "--json"]).output)}

    # a job whose tasks have written their results can still show RUNNING for a moment while Slurm closes it
    _until(lambda: states() == {"COMPLETED"}, 60, f"jobs did not end COMPLETED: {states()}")


@needs_slurm
@pytest.mark.timeout(300)
def test_cancelled_or_failed_job_stops_reproduce_within_a_minute(tmp_path, cancel_afterwards):
    # cancelled: reproduce (the CLI) ends with one line naming the job and its log
    run = tmp_path / "run"
    proc = _cli("reproduce", "tiny-digits", "train.steps=2000", *SLURM_CLI, "--run-dir", str(run))
    try:
        job = _registered(run)[0]
        subprocess.run(["scancel", job["job_id"]], check=True, timeout=30)
        cancelled = time.monotonic()
        output, _ = proc.communicate(timeout=90)
    finally:
        proc.kill()
    assert time.monotonic() - cancelled < 60
    assert proc.returncode == 1, output
    assert f"Slurm job {job['job_id']} ended CANCELLED" in output and job["stderr"] in output.replace("\n", "")
    assert "Traceback" not in output

    # failed: the task's process is killed (as by the kernel's OOM killer), so it leaves no result
    launcher = get_launcher("slurm", run_dir=tmp_path / "killed", slurm_overrides=SLURM)
    job = launcher.submit(Task("sleep", {"seconds": 300}))
    _until(lambda: _step_running(job.job_id), 120, "the job did not start")
    _kill_tasks(job.job_id)
    killed = time.monotonic()
    with pytest.raises(SlurmJobError, match=rf"Slurm job {job.job_id} ended FAILED .*log: .*{job.job_id}_0_log\.err"):
        launcher.wait(job, timeout_s=120)
    assert time.monotonic() - killed < 60


@needs_slurm
@pytest.mark.timeout(480)
def test_job_killed_and_requeued_with_work_left_resumes_without_loss(tmp_path, cancel_afterwards):
    from mixflow_bench.pipeline.tasks import sample_task
    from mixflow_bench.recipes.loader import load_recipe

    recipe = load_recipe("tiny-digits", None)
    model = dataclasses.asdict(recipe.model)
    sample = {**dataclasses.asdict(recipe.sample), "num": 48, "shard_size": 6, "batch_size": 3, "sampler": "sde",
              "steps": 50}  # fmt: skip
    out = tmp_path / "slurm.npz"
    launcher = get_launcher("slurm", run_dir=tmp_path, slurm_overrides=SLURM)
    job = launcher.submit(Task("sample", {"model": model, "sample": sample, "out": str(out), "progress": False}))
    shards = tmp_path / "slurm.npz.shards"
    deadline = time.monotonic() + 240
    while len(list(shards.glob("shard-*.npz"))) < 2:
        assert time.monotonic() < deadline, "the job wrote no shards"
        time.sleep(0.05)
    # kill its tasks mid-way, with no grace period in which to finish, then requeue it (as Slurm does after a
    # node failure); the task must pick up where it was killed
    _kill_tasks(job.job_id)
    _until(lambda: slurm_state(job.job_id) == "FAILED", 60, "the killed job did not end")
    before = {p.name: p.stat().st_mtime_ns for p in shards.glob("shard-*.npz")}
    assert 2 <= len(before) < 8, "the killed job had no work left"
    subprocess.run(["scontrol", "requeue", job.job_id], check=True, timeout=30)
    # Slurm holds a requeued job back for about two minutes; shorten that to 2 s, not to "now". The node revoked
    # the job's credential when the killed run ended (before the job showed FAILED), and refuses a launch whose new
    # credential carries the same second ("Job credential revoked"): the rerun would then fail at once.
    subprocess.run(["scontrol", "update", f"JobId={job.job_id}", "StartTime=now+2"], check=True, timeout=30)
    launcher.wait(job, timeout_s=360)

    info = subprocess.run(["scontrol", "show", "job", job.job_id], capture_output=True, text=True).stdout
    assert "Restarts=1" in info, info  # the job really ran twice
    after = {p.name: p.stat().st_mtime_ns for p in shards.glob("shard-*.npz")}
    assert len(after) == 8 and all(after[name] == stamp for name, stamp in before.items())  # kept, not redone
    ref = tmp_path / "local.npz"
    sample_task(model, {**sample, "shard_size": 48, "batch_size": 48}, str(ref), progress=False)
    assert out.read_bytes() == ref.read_bytes()  # nothing lost, nothing twice
