"""The Slurm launcher against a scripted Slurm (fake ``squeue``/``scontrol``/``sacct``/``sbatch``/``scancel`` on
PATH): job states of finished jobs, waiting that ends on every way a job can end, multi-task results, reattaching
to a job that still runs, and the torch.distributed environment of a Slurm task. The same paths run against a
real cluster in ``test_slurm_cluster.py``."""

from __future__ import annotations

import json
import os
import pickle
import stat
import time
from pathlib import Path

import pytest
import submitit

from mixflow_bench.launch import Task
from mixflow_bench.launch.registry import JobRegistry, slurm_state, task_fingerprint
from mixflow_bench.launch.slurm import MASTER_PORTS, SlurmJobError, SlurmLauncher, SlurmOptions, SlurmTask

# Each tool answers from $FAKE_SLURM/<job>.state the way Slurm 22.05 does: plain squeue lists only queued and
# running jobs, squeue -t all and scontrol also finished ones, a job it does not know is "Invalid job id".
FAKE_TOOLS = {
    "squeue": r"""
job=""; all=0
while [ $# -gt 0 ]; do case "$1" in -j) job="$2"; shift;; -t) [ "$2" = all ] && all=1; shift;; esac; shift; done
f="$FAKE_SLURM/$job.state"
[ -f "$f" ] || { echo "slurm_load_jobs error: Invalid job id specified" >&2; exit 1; }
s=$(cat "$f")
case "$s" in PENDING|RUNNING|COMPLETING|REQUEUED) echo "$s";; *) [ $all = 1 ] && echo "$s";; esac
exit 0
""",
    "scontrol": r"""
job="${@: -1}"; f="$FAKE_SLURM/$job.state"
[ -f "$f" ] || { echo "slurm_load_jobs error: Invalid job id specified" >&2; exit 1; }
echo "JobId=$job JobName=x JobState=$(cat "$f") Reason=None"
""",
    "sacct": 'echo "Slurm accounting storage is disabled" >&2; exit 1\n',
    "sbatch": r"""
n=$(( $(cat "$FAKE_SLURM/next" 2>/dev/null || echo 100) + 1 )); echo $n > "$FAKE_SLURM/next"
echo PENDING > "$FAKE_SLURM/$n.state"; echo "$n" >> "$FAKE_SLURM/sbatch.calls"
echo "Submitted batch job $n"
""",
    "scancel": 'echo "$1" >> "$FAKE_SLURM/scancel.calls"; echo CANCELLED > "$FAKE_SLURM/$1.state"\n',
    # submitit's SlurmExecutor refuses to start where no srun is on PATH; the jobs here never run, so it need not work
    "srun": 'echo "srun: not available in these tests" >&2; exit 1\n',
}


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch) -> Path:
    """A directory of scripted Slurm tools put first on PATH; returns the state directory."""
    bin_dir, state = tmp_path / "bin", tmp_path / "slurm-state"
    bin_dir.mkdir()
    state.mkdir()
    for name, body in FAKE_TOOLS.items():
        script = bin_dir / name
        script.write_text("#!/bin/bash\n" + body)
        script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SLURM", str(state))
    return state


def _set_state(state_dir: Path, job_id: str, state: str) -> None:
    (state_dir / f"{job_id}.state").write_text(state + "\n")


def _write_result(folder: Path, job_id: str, task: int, outcome: str, value) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{job_id}_{task}_result.pkl", "wb") as f:
        pickle.dump((outcome, value), f)


def _launcher(tmp_path: Path, **options) -> SlurmLauncher:
    return SlurmLauncher(tmp_path / "slurm", SlurmOptions(gpus_per_node=0, cpus_per_task=1, **options))


def _job(launcher: SlurmLauncher, job_id: str, tasks: int = 1) -> submitit.SlurmJob:
    return submitit.SlurmJob(folder=launcher.folder / job_id, job_id=job_id, tasks=tuple(range(tasks)))


def test_finished_jobs_keep_their_state(fake_slurm):
    """squeue without -t all forgets a finished job; the state must still say how it ended."""
    for state in ("CANCELLED", "FAILED", "TIMEOUT", "COMPLETED", "RUNNING"):
        _set_state(fake_slurm, "7", state)
        assert slurm_state("7") == state
    assert slurm_state("8") == "UNKNOWN"  # the controller answered: no such job


@pytest.mark.parametrize("state", ["CANCELLED", "FAILED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"])
def test_wait_stops_when_the_job_ended_without_result(fake_slurm, tmp_path, state):
    launcher = _launcher(tmp_path)
    _set_state(fake_slurm, "41", state)
    start = time.monotonic()
    with pytest.raises(SlurmJobError, match=rf"Slurm job 41 ended {state} .*log: .*41_0_log\.err"):
        launcher.wait(_job(launcher, "41"), poll_s=0.05, state_every_s=0.05, timeout_s=20)
    assert time.monotonic() - start < 5


def test_wait_stops_when_the_job_is_lost(fake_slurm, tmp_path):
    """Neither the controller nor accounting knows the job, and it left no result: not a wait forever."""
    launcher = _launcher(tmp_path)
    start = time.monotonic()
    with pytest.raises(SlurmJobError, match=r"Slurm job 42 is unknown to Slurm .*log: .*42_0_log\.err"):
        launcher.wait(_job(launcher, "42"), poll_s=0.05, state_every_s=0.05, timeout_s=20, lost_after_s=0.5)
    assert time.monotonic() - start < 5


def test_wait_gives_up_on_an_unreachable_controller(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "no-slurm-here"))
    launcher = _launcher(tmp_path)
    with pytest.raises(SlurmJobError, match="no Slurm query answered .* reattach"):
        launcher.wait(_job(launcher, "43"), poll_s=0.05, state_every_s=0.05, timeout_s=20, unreachable_after_s=0.3)


def test_multi_task_job_returns_rank_zero_result(fake_slurm, tmp_path):
    launcher = _launcher(tmp_path)
    job = _job(launcher, "44", tasks=2)
    _set_state(fake_slurm, "44", "RUNNING")
    _write_result(launcher.folder / "44", "44", 0, "success", "out.npz")
    _write_result(launcher.folder / "44", "44", 1, "success", None)
    assert launcher.wait(job, poll_s=0.05, state_every_s=0.05, timeout_s=20) == "out.npz"


def test_multi_task_job_waits_for_every_task(fake_slurm, tmp_path):
    """Rank 0's result alone does not end the wait while rank 1 still runs."""
    launcher = _launcher(tmp_path)
    _set_state(fake_slurm, "45", "RUNNING")
    _write_result(launcher.folder / "45", "45", 0, "success", "out.npz")
    with pytest.raises(TimeoutError):
        launcher.wait(_job(launcher, "45", tasks=2), poll_s=0.05, state_every_s=0.05, timeout_s=0.5)


def test_a_failed_task_stops_the_wait_and_cancels_its_peers(fake_slurm, tmp_path):
    launcher = _launcher(tmp_path)
    _set_state(fake_slurm, "46", "RUNNING")
    _write_result(launcher.folder / "46", "46", 1, "error", "Traceback ...\nValueError: bad shard")
    with pytest.raises(SlurmJobError, match=r"Slurm job 46 failed in task 1: ValueError: bad shard .*46_1_log\.err"):
        launcher.wait(_job(launcher, "46", tasks=2), poll_s=0.05, state_every_s=0.05, timeout_s=20)
    assert (fake_slurm / "scancel.calls").read_text().split() == ["46"]


def test_a_preempted_job_that_is_requeued_is_waited_for(fake_slurm, tmp_path):
    """PREEMPTED usually comes back as PENDING (requeue); only a lasting PREEMPTED ends the wait."""
    import threading

    launcher = _launcher(tmp_path)
    _set_state(fake_slurm, "48", "PREEMPTED")
    threading.Timer(0.3, _set_state, (fake_slurm, "48", "PENDING")).start()
    threading.Timer(0.6, _write_result, (launcher.folder / "48", "48", 0, "success", 7)).start()
    assert launcher.wait(_job(launcher, "48"), poll_s=0.05, state_every_s=0.05, timeout_s=20, lost_after_s=3) == 7
    _set_state(fake_slurm, "49", "PREEMPTED")
    with pytest.raises(SlurmJobError, match="Slurm job 49 ended PREEMPTED"):
        launcher.wait(_job(launcher, "49"), poll_s=0.05, state_every_s=0.05, timeout_s=20, lost_after_s=0.3)


def test_completed_job_without_result_is_an_error(fake_slurm, tmp_path):
    launcher = _launcher(tmp_path)
    _set_state(fake_slurm, "47", "COMPLETED")
    with pytest.raises(SlurmJobError, match=r"Slurm job 47 ended COMPLETED but task\(s\) \[0\] left no result"):
        launcher.wait(_job(launcher, "47"), poll_s=0.05, state_every_s=0.05, timeout_s=20, lost_after_s=0.3)


def test_rerun_reattaches_to_the_running_job(fake_slurm, tmp_path):
    """A second launcher (a rerun after the submitting process died) waits on the job already doing the work."""
    task = Task("sleep", {"seconds": 0}, name="nap")
    first = _launcher(tmp_path, tasks_per_node=2).start(task, "nap")
    assert (fake_slurm / "sbatch.calls").read_text().split() == [first.job_id]
    _set_state(fake_slurm, first.job_id, "RUNNING")
    said: list[str] = []
    again = _launcher(tmp_path, tasks_per_node=2).start(task, "nap", echo=said.append)
    assert again.job_id == first.job_id and again.num_tasks == 2
    assert (fake_slurm / "sbatch.calls").read_text().split() == [first.job_id]  # nothing submitted
    assert "reattached to Slurm job" in said[0] and first.job_id in said[0]
    entries = JobRegistry(tmp_path / "slurm").read()
    assert len(entries) == 1 and entries[0]["fingerprint"] == task_fingerprint(task) and entries[0]["tasks"] == 2
    # other work, or the same work once its job has ended, is submitted anew
    other = _launcher(tmp_path).start(Task("sleep", {"seconds": 1}, name="nap"), "nap")
    assert other.job_id != first.job_id
    _set_state(fake_slurm, first.job_id, "CANCELLED")
    fresh = _launcher(tmp_path).start(task, "nap")
    assert fresh.job_id not in (first.job_id, other.job_id)
    assert len(json.loads((tmp_path / "slurm" / "jobs.json").read_text())) == 3


def test_stages_that_are_not_distributed_get_one_task(tmp_path):
    launcher = _launcher(tmp_path, nodes=2, tasks_per_node=4)
    assert launcher.layout(distributed=True) == (2, 4, 0)
    assert launcher.layout(distributed=False) == (1, 1, 0)
    gpus = SlurmLauncher(tmp_path, SlurmOptions(gpus_per_node=8))
    assert gpus.layout(True) == (1, 8, 8) and gpus.layout(False) == (1, 1, 1)


SLURM_TASK_ENV = {
    "SUBMITIT_EXECUTOR": "slurm",
    "SLURM_JOB_ID": "4242",
    "SLURM_NTASKS": "4",
    "SLURM_JOB_NUM_NODES": "2",
    "SLURM_NODEID": "1",
    "SLURM_JOB_NODELIST": "gpu[07-08]",
    "SLURM_PROCID": "3",
    "SLURM_LOCALID": "1",
}
TORCH_KEYS = ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")


def _torch_env_in_task(monkeypatch, **slurm: str) -> dict[str, str]:
    for key, value in {**SLURM_TASK_ENV, **slurm}.items():
        monkeypatch.setenv(key, value)
    for key in TORCH_KEYS:  # left over from the submitting shell (sbatch exports it): must not win
        monkeypatch.setenv(key, "9")
    SlurmTask(Task("sleep", {"seconds": 0}))()
    return {k: os.environ[k] for k in TORCH_KEYS}


def test_slurm_task_gets_the_torch_distributed_environment(monkeypatch):
    env = _torch_env_in_task(monkeypatch)
    assert {k: env[k] for k in ("MASTER_ADDR", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")} == {
        "MASTER_ADDR": "gpu07", "RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2",
    }  # fmt: skip
    assert MASTER_PORTS[0] <= int(env["MASTER_PORT"]) <= MASTER_PORTS[1]
    # every task of the job agrees on the port; a requeued run of the job takes another
    rank0 = _torch_env_in_task(monkeypatch, SLURM_PROCID="0", SLURM_LOCALID="0", SLURM_NODEID="0")
    assert rank0["MASTER_PORT"] == env["MASTER_PORT"] and rank0["RANK"] == "0"
    requeued = _torch_env_in_task(monkeypatch, SLURM_RESTART_COUNT="1")
    assert requeued["MASTER_PORT"] != env["MASTER_PORT"]


def test_changed_stage_with_a_running_job_is_not_cleared(fake_slurm, tmp_path):
    """A stage whose settings changed is not wiped while a job of its earlier settings still writes into it."""
    from mixflow_bench.pipeline.manifest import ManifestStore
    from mixflow_bench.pipeline.reproduce import reproduce
    from mixflow_bench.pipeline.stages import build_stages
    from mixflow_bench.recipes.loader import load_recipe

    run = tmp_path / "run"
    model = run / "train" / "model.pt"
    model.parent.mkdir(parents=True)
    model.write_bytes(b"weights of the earlier settings")
    stage = next(s for s in build_stages(load_recipe("tiny-digits", None), run, "tiny-digits", {}) if s.name == "train")
    earlier = {**stage.settings, "train": {**stage.settings["train"], "lr": 0.5}}  # another learning rate
    ManifestStore(run).write("train", earlier, stage.inputs, [model])
    launcher = SlurmLauncher(run / "slurm", SlurmOptions(gpus_per_node=0))
    launcher.registry.add(job_id="77", name="tiny-digits-train", stage="train", folder=str(run / "slurm" / "77"),
                          tasks=1, fingerprint="earlier", stdout="-", stderr="-")  # fmt: skip
    _set_state(fake_slurm, "77", "RUNNING")
    running = r"stage train changed: Slurm job\(s\) 77 of its earlier settings are still queued or running"
    with pytest.raises(RuntimeError, match=running):
        reproduce("tiny-digits", run_dir=run, launcher=launcher)
    assert model.read_bytes() == b"weights of the earlier settings"
    assert not (fake_slurm / "sbatch.calls").exists()
