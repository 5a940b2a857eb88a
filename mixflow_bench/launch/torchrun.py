"""Run a task on N local processes through ``torch.distributed.run`` (one per GPU, or CPU processes)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

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
            raise ValueError(f"nproc must be at least 1, got {nproc}")
        self.nproc = nproc
        self.work_dir = Path(work_dir) if work_dir else None

    def command(self, task_file: Path) -> list[str]:
        return [
            sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={self.nproc}",
            "-m", "mixflow_bench.launch.worker", str(task_file),
        ]  # fmt: skip

    def run(self, task: Task) -> None:
        directory = self.work_dir or Path(tempfile.mkdtemp(prefix="mixflow-torchrun-"))
        directory.mkdir(parents=True, exist_ok=True)
        task_file = directory / f"task-{task.name}.json"
        task_file.write_text(task.to_json())
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
        env.setdefault("OMP_NUM_THREADS", "1")
        rc = subprocess.run(self.command(task_file), env=env).returncode
        if rc != 0:
            raise TorchrunError(f"torchrun task {task.name!r} failed with exit status {rc} (task file {task_file})")
