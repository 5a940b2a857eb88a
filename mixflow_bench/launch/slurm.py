"""Run tasks as Slurm jobs through submitit.

Jobs are :class:`submitit.helpers.Checkpointable`: on preemption or time-out submitit requeues the same task, and
on a requeue by Slurm itself (``scontrol requeue``) the job script runs the task again; in both cases the task
resumes from the shards and checkpoints it has written. Defaults come from a recipe's ``slurm:`` section; CLI
options override them. Every submitted job is added to the run directory's job registry (``mixflow-bench jobs``).

A distributed stage runs as one job of ``nodes x tasks_per_node`` tasks (one per GPU); each task gets the
``torch.distributed`` environment (``MASTER_ADDR``/``MASTER_PORT``/``RANK``/``WORLD_SIZE``/``LOCAL_RANK``) from
Slurm's. Waiting for a job ends with its result, or with a :class:`SlurmJobError` naming the job and its log as
soon as the job has failed, been cancelled, timed out or is lost. Running the same work again while its job is
still queued or running (e.g. after the submitting process died) reattaches to that job instead of submitting
a second one into the same folder.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import submitit

from mixflow_bench.launch.registry import (
    FAILED_STATES,
    LIVE_STATES,
    UNKNOWN,
    UNREACHABLE,
    JobRegistry,
    read_result,
    slurm_state,
    task_fingerprint,
)
from mixflow_bench.launch.tasks import LaunchError, Task

REPO_ROOT = Path(__file__).resolve().parents[2]
FINAL_FAILED = FAILED_STATES  # kept for callers of the old name
MASTER_PORTS = (20000, 60000)  # MASTER_PORT is drawn from this range, seeded by the job id and restart count


@dataclass
class SlurmOptions:
    """Resources of a job; ``None`` leaves the cluster's default."""

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    nodes: int = 1
    gpus_per_node: int = 1
    tasks_per_node: int | None = None  # default: one task per GPU (one task on a CPU-only job)
    cpus_per_task: int = 8
    mem_gb: int | None = None
    timeout_min: int = 240
    constraint: str | None = None

    @classmethod
    def from_section(cls, section: Any, **overrides: Any) -> SlurmOptions:
        base = asdict(section) if section is not None and not isinstance(section, dict) else dict(section or {})
        base.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**{k: v for k, v in base.items() if k in cls.__dataclass_fields__})


def slurm_available() -> tuple[bool, str]:
    """(True, "") when ``sbatch``/``sinfo`` exist and a node is idle or partly used; else (False, why)."""
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return False, "Slurm is not installed here (no sinfo/sbatch on PATH); run .ci/slurm-up.sh as root"
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as e:
        return False, f"sinfo failed: {e}"
    if out.returncode != 0:
        return False, f"sinfo failed: {out.stderr.strip()} (is slurmctld running? .ci/slurm-up.sh)"
    states = out.stdout.split()
    if not any(s.rstrip("*~#") in ("idle", "mix", "alloc") for s in states):
        return False, f"no usable Slurm node (states: {states or 'none'})"
    return True, ""


def accounting_enabled() -> bool:
    """Whether ``sacct`` works on this cluster (it does not when AccountingStorageType is none)."""
    try:
        out = subprocess.run(["sacct", "-n", "-X", "-j", "1"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and "disabled" not in (out.stderr + out.stdout).lower()


class _SacctDisabledFilter(logging.Filter):
    """Drops submitit's per-poll 'Bypassing sacct error' warning; only installed when accounting is disabled,
    where the job state comes from squeue and the result files instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Bypassing sacct error" not in record.getMessage()


_FILTER_INSTALLED = False


def quiet_sacct_warnings() -> None:
    global _FILTER_INSTALLED
    if _FILTER_INSTALLED or accounting_enabled():
        return
    logging.getLogger("submitit").addFilter(_SacctDisabledFilter())
    _FILTER_INSTALLED = True


def torch_distributed_env(env: submitit.JobEnvironment | None = None) -> dict[str, str]:
    """The ``torch.distributed`` (env://) variables of this Slurm task: rank and world size from Slurm's
    ``SLURM_PROCID``/``SLURM_NTASKS``/``SLURM_LOCALID``, the job's first node as ``MASTER_ADDR`` and a
    ``MASTER_PORT`` drawn from the job id and ``SLURM_RESTART_COUNT`` (the same in every task of one run of
    the job; another port after a requeue, while the old one may still be held)."""
    env = env or submitit.JobEnvironment()
    seed = f"{env.job_id}:{os.environ.get('SLURM_RESTART_COUNT', '0')}"
    local_world = max(env.num_tasks // max(env.num_nodes, 1), 1)
    return {
        "MASTER_ADDR": env.hostnames[0],
        "MASTER_PORT": str(random.Random(seed).randint(*MASTER_PORTS)),
        "RANK": str(env.global_rank),
        "WORLD_SIZE": str(env.num_tasks),
        "LOCAL_RANK": str(env.local_rank),
        "LOCAL_WORLD_SIZE": str(local_world),
    }


class SlurmTask(submitit.helpers.Checkpointable):
    """The callable submitit pickles: runs one :class:`Task` with the torch.distributed variables set.

    The variables are overwritten, not defaulted: ``sbatch`` exports the submitting shell's environment, which
    may hold another job's ``RANK`` or ``MASTER_PORT``."""

    def __init__(self, task: Task):
        self.task = task

    def __call__(self) -> Any:
        os.environ.update(torch_distributed_env())
        return self.task.run()


class SlurmJobError(LaunchError):
    """A Slurm job that ended without a result (failed, cancelled, timed out, lost); names the job and its log."""


Echo = Callable[[str], None]


class SlurmLauncher:
    name = "slurm"

    def __init__(self, folder: Path, options: SlurmOptions, registry: JobRegistry | None = None):
        self.folder = Path(folder)
        self.options = options
        self.registry = registry or JobRegistry(self.folder)

    def layout(self, distributed: bool = True) -> tuple[int, int, int]:
        """(nodes, tasks per node, GPUs per node) of a job; a stage that is not distributed gets one task."""
        o = self.options
        if not distributed:
            return 1, 1, min(o.gpus_per_node, 1)
        tasks = o.tasks_per_node if o.tasks_per_node else max(o.gpus_per_node, 1)
        return max(o.nodes, 1), tasks, o.gpus_per_node

    def executor(self, name: str, distributed: bool = True) -> submitit.AutoExecutor:
        o = self.options
        nodes, tasks_per_node, gpus_per_node = self.layout(distributed)
        ex = submitit.AutoExecutor(folder=self.folder / "%j", cluster="slurm")
        params: dict[str, Any] = {
            "name": name,
            "nodes": nodes,
            "tasks_per_node": tasks_per_node,
            "cpus_per_task": o.cpus_per_task,
            "timeout_min": o.timeout_min,
            "slurm_setup": [f"export PYTHONPATH={REPO_ROOT}${{PYTHONPATH:+:$PYTHONPATH}}"],
        }
        if gpus_per_node:
            params["gpus_per_node"] = gpus_per_node
        if o.mem_gb is not None:
            params["mem_gb"] = o.mem_gb
        for key in ("partition", "account", "qos", "constraint"):
            value = getattr(o, key)
            if value:
                params[f"slurm_{key}"] = value
        ex.update_parameters(**params)
        return ex

    def submit(self, task: Task, stage: str | None = None, *, distributed: bool = True) -> submitit.Job:
        """Submit ``task`` as a new job (see :meth:`start` for submitting only what is not running yet)."""
        quiet_sacct_warnings()
        nodes, tasks_per_node, _ = self.layout(distributed)
        with self.registry.locked():
            job = self.executor(task.name, distributed).submit(SlurmTask(task))
            self.registry.add(
                job_id=str(job.job_id),
                name=task.name,
                stage=stage or task.kind,
                folder=str(self.folder / str(job.job_id)),
                tasks=nodes * tasks_per_node,
                fingerprint=task_fingerprint(task),
                stdout=str(job.paths.stdout),
                stderr=str(job.paths.stderr),
            )
        return job

    def attach(self, entry: dict[str, Any]) -> submitit.Job:
        """A handle on a registered job (all its tasks)."""
        tasks = tuple(range(int(entry.get("tasks", 1))))
        return submitit.SlurmJob(folder=entry["folder"], job_id=str(entry["job_id"]), tasks=tasks)

    def start(
        self, task: Task, stage: str | None = None, *, distributed: bool = True, echo: Echo | None = None
    ) -> submitit.Job:
        """The job doing ``task``: a still queued or running job registered for the same work (a rerun after the
        submitting process died), else a newly submitted one."""
        echo = echo or _silent
        with self.registry.locked():  # two processes starting the same work submit it once
            live = self.registry.live_job(task_fingerprint(task))
            if live is not None:
                entry, state = live
                echo(f"reattached to Slurm job {entry['job_id']} ({state}, submitted {entry.get('submitted', '?')}) "
                     f"for the same work; log: {entry['stderr']}")  # fmt: skip
                return self.attach(entry)
            job = self.submit(task, stage, distributed=distributed)
        echo(f"submitted Slurm job {job.job_id} ({job.num_tasks} task(s)); log: {job.paths.stderr}")
        return job

    def running_for(self, stage: str) -> list[str]:
        """The ids of jobs registered for ``stage`` that are still queued or running."""
        return [entry["job_id"] for entry, _ in self.registry.live_jobs(lambda job: job.get("stage") == stage)]

    def wait(
        self,
        job: submitit.Job,
        poll_s: float = 1.0,
        timeout_s: float | None = None,
        *,
        state_every_s: float = 5.0,
        lost_after_s: float = 30.0,
        unreachable_after_s: float = 600.0,
        echo: Echo | None = None,
    ) -> Any:
        """Block until every task of ``job`` has its result (requeues included); return rank 0's result.

        Result files are looked at every ``poll_s`` seconds, Slurm is asked every ``state_every_s``. Raises
        :class:`SlurmJobError` as soon as a task raised (the job's other tasks are cancelled, since they may wait
        for it forever); when the job ended failed/cancelled/timed out (seen twice, so that a requeue in passing
        does not count; ``PREEMPTED`` for ``lost_after_s``, since a preempted job is usually requeued); when it
        ended COMPLETED without every result, or has been unknown to Slurm (and accounting) for ``lost_after_s``;
        when no Slurm query answered for ``unreachable_after_s``. :class:`TimeoutError` after ``timeout_s``.
        """
        echo = echo or _silent
        job_id = str(job.job_id)
        folder = Path(job.paths.folder)
        num_tasks = job.num_tasks
        log = job.paths.stderr
        start = time.monotonic()
        state, since, asked = "", start, -float("inf")
        while True:
            results = [read_result(folder, job_id, t) for t in range(num_tasks)]
            failed = [t for t, r in enumerate(results) if r is not None and r[0] == "error"]
            if failed:
                raise self._task_failed(job, failed[0], results[failed[0]][1])
            if all(r is not None and r[0] == "success" for r in results):
                return results[0][1]
            now = time.monotonic()
            if now - asked >= state_every_s:
                asked = now
                now_state = slurm_state(job_id)
                if now_state != state:
                    state, since = now_state, now
                    echo(f"Slurm job {job_id}: {state}")
            waited = now - since
            missing = [t for t, r in enumerate(results) if r is None]
            if state in FAILED_STATES and waited > (lost_after_s if state == "PREEMPTED" else 0.0):
                raise SlurmJobError(f"Slurm job {job_id} ended {state} before finishing{_last_line(log)}; log: {log}")
            if state == "COMPLETED" and waited > lost_after_s:
                raise SlurmJobError(f"Slurm job {job_id} ended COMPLETED but task(s) {missing} left no result "
                                    f"after {lost_after_s:.0f} s{_last_line(log)}; log: {log}")  # fmt: skip
            if state == UNKNOWN and waited > lost_after_s:
                raise SlurmJobError(f"Slurm job {job_id} is unknown to Slurm (squeue -t all, scontrol, sacct) and "
                                    f"left no result for task(s) {missing}{_last_line(log)}; log: {log}")  # fmt: skip
            if state == UNREACHABLE and waited > unreachable_after_s:
                raise SlurmJobError(f"no Slurm query answered for {unreachable_after_s:.0f} s while waiting for job "
                                    f"{job_id}; rerun the same command to reattach to it; log: {log}")  # fmt: skip
            if timeout_s is not None and now - start > timeout_s:
                raise TimeoutError(f"Slurm job {job_id} not done after {timeout_s} s (state {state}); log: {log}")
            time.sleep(poll_s)

    def _task_failed(self, job: submitit.Job, task: int, trace: Any) -> SlurmJobError:
        """The error for a task that raised; cancels the job when its other tasks are still running."""
        job_id = str(job.job_id)
        log = Path(job.paths.folder) / f"{job_id}_{task}_log.err"
        note = ""
        if job.num_tasks > 1 and slurm_state(job_id) in LIVE_STATES:
            subprocess.run(["scancel", job_id], capture_output=True, timeout=30)
            note = " (its other tasks were cancelled)"
        lines = [s for s in str(trace).strip().splitlines() if s.strip()]
        reason = f": {lines[-1].strip()}" if lines else ""
        return SlurmJobError(f"Slurm job {job_id} failed in task {task}{reason}{note}; log: {log}")

    def run(self, task: Task, stage: str | None = None, *, distributed: bool = True, echo: Echo | None = None) -> Any:
        """Run ``task`` as a job (or reattach to the job already doing it) and return rank 0's result."""
        return self.wait(self.start(task, stage, distributed=distributed, echo=echo), echo=echo)


def _silent(_: str) -> None:
    """Discard a progress line (the default ``echo``)."""


def _last_line(log: Path) -> str:
    """`` (log ends: ...)`` with the log's last non-empty line, or nothing when there is none."""
    try:
        lines = [s.strip() for s in Path(log).read_text(errors="replace").splitlines() if s.strip()]
    except OSError:
        return ""
    return f" (log ends: {lines[-1][:200]})" if lines else ""
