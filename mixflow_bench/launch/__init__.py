"""Launchers: run a task in process (local), on N processes (torchrun), or as Slurm jobs (submitit)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mixflow_bench.launch.tasks import LaunchError, Task

LAUNCHERS = ("local", "torchrun", "slurm")


def get_launcher(
    name: str,
    *,
    run_dir: Path | None = None,
    slurm_section: Any = None,
    slurm_overrides: dict[str, Any] | None = None,
    nproc: int | None = None,
):
    """The launcher called ``name`` (local | torchrun | slurm)."""
    if name == "local":
        from mixflow_bench.launch.local import LocalLauncher

        return LocalLauncher()
    if name == "torchrun":
        from mixflow_bench.launch.torchrun import TorchrunLauncher

        return TorchrunLauncher(nproc=nproc, work_dir=(Path(run_dir) / "torchrun") if run_dir else None)
    if name == "slurm":
        from mixflow_bench.launch.slurm import SlurmLauncher, SlurmOptions, slurm_available

        ok, why = slurm_available()
        if not ok:
            raise LaunchError(f"--launcher slurm: {why}")
        folder = Path(run_dir or "runs") / "slurm"
        return SlurmLauncher(folder, SlurmOptions.from_section(slurm_section, **(slurm_overrides or {})))
    raise ValueError(f"unknown launcher {name!r} (expected one of {', '.join(LAUNCHERS)})")


__all__ = ["LAUNCHERS", "LaunchError", "Task", "get_launcher"]
