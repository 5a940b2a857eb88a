"""Run tasks as Slurm jobs through submitit.

Jobs are :class:`submitit.helpers.Checkpointable`: on preemption or time-out submitit requeues the same task, and
on a requeue by Slurm itself (``scontrol requeue``) the job script runs the task again; in both cases the task
resumes from the shards and checkpoints it has written. Defaults come from a recipe's ``slurm:`` section; CLI
options override them. Every submitted job is added to the run directory's job registry (``mixflow-bench jobs``).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import submitit

from mixflow_bench.launch.registry import JobRegistry, slurm_state
from mixflow_bench.launch.tasks import Task

REPO_ROOT = Path(__file__).resolve().parents[2]
FINAL_FAILED = {"FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE"}


@dataclass
class SlurmOptions:
    """Resources of a job; ``None`` leaves the cluster's default."""

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    nodes: int = 1
    gpus_per_node: int = 1
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


class SlurmTask(submitit.helpers.Checkpointable):
    """The callable submitit pickles: runs one :class:`Task` with torch-style rank variables set."""

    def __init__(self, task: Task):
        self.task = task

    def __call__(self) -> Any:
        env = submitit.JobEnvironment()
        os.environ.setdefault("RANK", str(env.global_rank))
        os.environ.setdefault("WORLD_SIZE", str(env.num_tasks))
        os.environ.setdefault("LOCAL_RANK", str(env.local_rank))
        return self.task.run()


class SlurmLauncher:
    name = "slurm"

    def __init__(self, folder: Path, options: SlurmOptions, registry: JobRegistry | None = None):
        self.folder = Path(folder)
        self.options = options
        self.registry = registry or JobRegistry(self.folder)

    def executor(self, name: str) -> submitit.AutoExecutor:
        o = self.options
        ex = submitit.AutoExecutor(folder=self.folder / "%j", cluster="slurm")
        params: dict[str, Any] = {
            "name": name,
            "nodes": o.nodes,
            "tasks_per_node": max(o.gpus_per_node, 1),
            "cpus_per_task": o.cpus_per_task,
            "timeout_min": o.timeout_min,
            "slurm_setup": [f"export PYTHONPATH={REPO_ROOT}${{PYTHONPATH:+:$PYTHONPATH}}"],
        }
        if o.gpus_per_node:
            params["gpus_per_node"] = o.gpus_per_node
        if o.mem_gb is not None:
            params["mem_gb"] = o.mem_gb
        for key in ("partition", "account", "qos", "constraint"):
            value = getattr(o, key)
            if value:
                params[f"slurm_{key}"] = value
        ex.update_parameters(**params)
        return ex

    def submit(self, task: Task, stage: str | None = None) -> submitit.Job:
        quiet_sacct_warnings()
        job = self.executor(task.name).submit(SlurmTask(task))
        self.registry.add(
            job_id=str(job.job_id),
            name=task.name,
            stage=stage or task.kind,
            folder=str(self.folder / str(job.job_id)),
            stdout=str(job.paths.stdout),
            stderr=str(job.paths.stderr),
        )
        return job

    def wait(self, job: submitit.Job, poll_s: float = 2.0, timeout_s: float | None = None) -> Any:
        """Block until ``job`` is done (requeues included); return its result or raise its error."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while not job.paths.result_pickle.exists():
            state = slurm_state(str(job.job_id))
            if state in FINAL_FAILED:
                raise RuntimeError(f"Slurm job {job.job_id} ended {state}; log: {job.paths.stderr}")
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"Slurm job {job.job_id} not done after {timeout_s} s (state {state})")
            time.sleep(poll_s)
        return job.result()

    def run(self, task: Task, stage: str | None = None) -> Any:
        return self.wait(self.submit(task, stage))
