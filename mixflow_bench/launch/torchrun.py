"""Run a task on N local processes through ``torch.distributed.run`` (one per GPU, or CPU processes)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from mixflow_bench.errors import SettingError
from mixflow_bench.launch.tasks import LaunchError, Task

REPO_ROOT = Path(__file__).resolve().parents[2]


class TorchrunError(LaunchError):
    """A torchrun launch that exited non-zero."""


class TorchrunLauncher:
    name = "torchrun"

    def __init__(self, nproc: int | None = None, work_dir: Path | None = None):
        if nproc is None:
            import torch

            nproc = max(torch.cuda.device_count(), 1)
        if nproc < 1:
            raise SettingError(f"--nproc must be at least 1, got {nproc}")
        self.nproc = nproc
        self.work_dir = Path(work_dir) if work_dir else None

    def command(self, task_file: Path, failure_file: Path) -> list[str]:
        """torchrun through :mod:`mixflow_bench.launch.torchrun_agent`, which writes a failed run's report to
        ``failure_file`` instead of printing it as a traceback."""
        return [
            sys.executable, "-m", "mixflow_bench.launch.torchrun_agent", str(failure_file),
            "--standalone", f"--nproc_per_node={self.nproc}", "-m", "mixflow_bench.launch.worker", str(task_file),
        ]  # fmt: skip

    def run(self, task: Task) -> None:
        directory = self.work_dir or Path(tempfile.mkdtemp(prefix="mixflow-torchrun-"))
        directory.mkdir(parents=True, exist_ok=True)
        task_file = directory / f"task-{task.name}.json"
        task_file.write_text(task.to_json())
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
        env.setdefault("OMP_NUM_THREADS", "1")
        failure_file = directory / f"failure-{task.name}.txt"
        rc = subprocess.run(self.command(task_file, failure_file), env=env).returncode
        if rc == 0:
            return
        if failure_file.exists():  # a rank failed; torchrun stopped the others
            cause = failure_file.read_text().splitlines()[0]
            raise TorchrunError(
                f"torchrun task {task.name!r} failed: {cause} (report: {failure_file}); finished work is kept, "
                "rerun the same command to resume"
            )
        raise TorchrunError(f"torchrun task {task.name!r} failed with exit status {rc} (task file {task_file})")
