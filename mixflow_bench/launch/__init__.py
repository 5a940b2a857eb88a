"""Launchers: run a task in process (local), on N processes (torchrun), or as Slurm jobs (submitit)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from mixflow_bench.launch.tasks import LaunchError, Task
from mixflow_bench.registry import Registry

Factory = Callable[..., Any]  # keyword arguments run_dir, slurm_section, slurm_overrides, nproc -> a launcher

# name -> factory of a launcher (an object whose ``run(task)`` runs a Task and returns its result)
LAUNCHERS: Registry[Factory] = Registry("launcher")


def register_launcher(name: str, factory: Factory) -> Factory:
    """Make ``factory`` the launcher called ``name`` (``--launcher NAME``; a name can be registered once)."""
    return LAUNCHERS.register(name, factory)


def unregister_launcher(name: str) -> None:
    """Remove a registered launcher (tests that register their own)."""
    LAUNCHERS.unregister(name)


def launcher_names() -> tuple[str, ...]:
    """The registered launcher names."""
    return LAUNCHERS.names()


def get_launcher(
    name: str,
    *,
    run_dir: Path | None = None,
    slurm_section: Any = None,
    slurm_overrides: dict[str, Any] | None = None,
    nproc: int | None = None,
):
    """The launcher called ``name`` (local | torchrun | slurm | a registered one)."""
    factory = LAUNCHERS.lookup(name)
    return factory(run_dir=run_dir, slurm_section=slurm_section, slurm_overrides=slurm_overrides, nproc=nproc)


def _local(**_: Any):
    """In this process."""
    from mixflow_bench.launch.local import LocalLauncher

    return LocalLauncher()


def _torchrun(*, run_dir: Path | None, nproc: int | None, **_: Any):
    """On ``nproc`` torchrun processes of this machine."""
    from mixflow_bench.launch.torchrun import TorchrunLauncher

    return TorchrunLauncher(nproc=nproc, work_dir=(Path(run_dir) / "torchrun") if run_dir else None)


def _slurm(*, run_dir: Path | None, slurm_section: Any, slurm_overrides: dict[str, Any] | None, **_: Any):
    """As Slurm jobs through submitit (the recipe's ``slurm:`` section under the command line's options)."""
    from mixflow_bench.launch.slurm import SlurmLauncher, SlurmOptions, slurm_available

    ok, why = slurm_available()
    if not ok:
        raise LaunchError(f"--launcher slurm: {why}")
    folder = Path(run_dir or "runs") / "slurm"
    return SlurmLauncher(folder, SlurmOptions.from_section(slurm_section, **(slurm_overrides or {})))


register_launcher("local", _local)
register_launcher("torchrun", _torchrun)
register_launcher("slurm", _slurm)

__all__ = ["LAUNCHERS", "LaunchError", "Task", "get_launcher", "launcher_names", "register_launcher",
           "unregister_launcher"]
