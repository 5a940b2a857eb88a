"""The run directory's job registry (``jobs.json``) and Slurm job states.

A job's state comes from the controller (``squeue -t all``, then ``scontrol show job``; both know a finished job
for ``MinJobAge`` seconds), then from accounting (``sacct``, where it is enabled), then from the job's own
result files. Plain ``squeue`` lists only queued and running jobs, so it cannot tell a finished job from a lost
one; none of the queries here rely on it.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from filelock import FileLock

from mixflow_bench.results.records import write_json_atomic

# the job will still run (or run again): wait for it, and reattach to it instead of submitting the work twice
LIVE_STATES = frozenset({
    "PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING",
    "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT", "RESV_DEL_HOLD", "SPECIAL_EXIT", "POWER_UP_NODE",
})  # fmt: skip
# the job ended without finishing its work
FAILED_STATES = frozenset({
    "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE", "PREEMPTED",
    "REVOKED",
})  # fmt: skip
UNKNOWN = "UNKNOWN"  # the controller answered and does not know the job (and no other source does)
UNREACHABLE = "UNREACHABLE"  # no Slurm query answered at all (controller down or too slow)


def slurm_state(job_id: str) -> str:
    """The job's state: ``squeue -t all``, else ``scontrol show job``, else ``sacct``; else :data:`UNKNOWN`
    (the controller no longer knows the job) or :data:`UNREACHABLE` (no query answered)."""
    answered = False
    for command in (
        ["squeue", "-h", "-t", "all", "-j", job_id, "-o", "%T"],
        ["scontrol", "show", "job", "-o", job_id],
        ["sacct", "-n", "-X", "-P", "-j", job_id, "-o", "State"],
    ):
        out = _query(command)
        if out is None:
            continue
        rc, stdout, stderr = out
        if rc == 0:
            state = _parse_state(command[0], stdout)
            if state:
                return state
        if "invalid job id" in stderr.lower() or rc == 0:
            answered = True  # the controller (or accounting) answered: it does not know the job
    return UNKNOWN if answered else UNREACHABLE


def _parse_state(tool: str, stdout: str) -> str | None:
    if tool == "scontrol":
        match = re.search(r"\bJobState=(\S+)", stdout)
        return match.group(1) if match else None
    words = stdout.split()  # sacct prints e.g. "CANCELLED by 0"
    return words[0].rstrip("+") if words else None


def _query(command: list[str]) -> tuple[int, str, str] | None:
    """(exit status, stdout, stderr) of a Slurm query, or None when the tool is missing or does not answer."""
    if not shutil.which(command[0]):
        return None
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.returncode, out.stdout, out.stderr


def read_result(folder: Path, job_id: str, task: int = 0) -> tuple[str, Any] | None:
    """(``success``, result) or (``error``, trace) from a task's submitit result pickle, or None (none yet)."""
    import pickle

    path = Path(folder) / f"{job_id}_{task}_result.pkl"
    if not path.exists():
        return None
    try:
        with open(path, "rb") as f:
            outcome, value = pickle.load(f)
    except Exception:  # noqa: BLE001 - a half-written pickle reads as none yet
        return None
    return str(outcome), value


def result_outcomes(folder: Path, job_id: str, num_tasks: int = 1) -> list[str | None]:
    """Each task's outcome from submitit's result pickles: ``success``, ``error`` or None (none yet)."""
    results = [read_result(folder, job_id, t) for t in range(num_tasks)]
    return [r[0] if r is not None else None for r in results]


def result_state(folder: Path, job_id: str, num_tasks: int = 1) -> str | None:
    """COMPLETED (every task succeeded) / FAILED (a task raised) from the result pickles, else None."""
    outcomes = result_outcomes(folder, job_id, num_tasks)
    if "error" in outcomes:
        return "FAILED"
    if all(o == "success" for o in outcomes):
        return "COMPLETED"
    return None


def task_fingerprint(task: Any) -> str:
    """The sha256 of a task's JSON: the same work gives the same fingerprint in any process."""
    return hashlib.sha256(task.to_json().encode()).hexdigest()


class JobRegistry:
    """``<dir>/jobs.json``: one entry per submitted job (id, name, stage, folder, tasks, fingerprint, logs)."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.path = self.directory / "jobs.json"
        self._lock = FileLock(str(self.path) + ".lock")  # one object, so that holding it is reentrant

    def locked(self) -> FileLock:
        """The registry's lock (hold it around look-up, submission and :meth:`add`, so that two processes
        do not both submit the same work)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        return self._lock

    def read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return json.loads(self.path.read_text())

    def add(self, **entry: Any) -> None:
        entry.setdefault("submitted", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
        with self.locked():
            jobs = self.read()
            jobs.append(entry)
            write_json_atomic(self.path, jobs)

    def live_job(self, fingerprint: str) -> tuple[dict[str, Any], str] | None:
        """The newest entry for this work whose job is still queued or running, with its state; else None."""
        live = self.live_jobs(lambda job: job.get("fingerprint") == fingerprint)
        return live[-1] if live else None

    def live_jobs(self, which: Callable[[dict[str, Any]], bool] = lambda job: True) -> list[tuple[dict[str, Any], str]]:
        """(entry, state) of every registered job selected by ``which`` that is still queued or running."""
        out = []
        for job in self.read():
            if which(job):
                state = slurm_state(job["job_id"])
                if state in LIVE_STATES:
                    out.append((job, state))
        return out

    def with_states(self) -> list[dict[str, Any]]:
        """The entries, each with ``state`` (live from Slurm, else from the result files)."""
        out = []
        for job in self.read():
            state = slurm_state(job["job_id"])
            if state in (UNKNOWN, UNREACHABLE):
                state = result_state(Path(job["folder"]), job["job_id"], int(job.get("tasks", 1))) or state
            out.append({**job, "state": state})
        return out


def find_registries(root: Path) -> list[JobRegistry]:
    """Every job registry below ``root``."""
    root = Path(root)
    if not root.exists():
        return []
    return [JobRegistry(p.parent) for p in sorted(root.rglob("jobs.json"))]
