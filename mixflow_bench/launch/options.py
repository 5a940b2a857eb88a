"""Click options shared by commands that launch work (``sample``, ``train``, ``reproduce``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from mixflow_bench.choices import RegistryChoice
from mixflow_bench.launch import launcher_names

SLURM_FIELDS = ("partition", "account", "qos", "nodes", "gpus_per_node", "tasks_per_node", "cpus_per_task",
                "mem_gb", "timeout_min", "constraint")  # fmt: skip


def launch_options(f: Callable[..., Any]) -> Callable[..., Any]:
    opts = [
        click.option("--launcher", type=RegistryChoice(launcher_names), default="local", show_default=True,
                     help="run in process, on N torchrun processes, or as Slurm jobs (or a registered launcher)"),
        click.option("--nproc", type=int, default=None, help="torchrun processes (default: number of GPUs, or 1)"),
        click.option("--partition", default=None, help="Slurm partition (overrides the recipe's slurm:)"),
        click.option("--account", default=None, help="Slurm account"),
        click.option("--qos", default=None, help="Slurm QOS"),
        click.option("--nodes", type=int, default=None, help="Slurm nodes"),
        click.option("--gpus-per-node", "gpus_per_node", type=int, default=None, help="GPUs (= tasks) per node"),
        click.option("--tasks-per-node", "tasks_per_node", type=int, default=None,
                     help="Slurm tasks (ranks) per node of a distributed stage (default: one per GPU)"),
        click.option("--cpus", "cpus_per_task", type=int, default=None, help="CPUs per task"),
        click.option("--mem", "mem_gb", type=int, default=None, help="memory per node in GB"),
        click.option("--time", "timeout_min", type=int, default=None, help="time limit in minutes"),
        click.option("--constraint", default=None, help="Slurm node constraint"),
    ]  # fmt: skip
    for opt in reversed(opts):
        f = opt(f)
    return f


def pop_launch_options(kwargs: dict[str, Any]) -> tuple[str, int | None, dict[str, Any]]:
    """(launcher name, nproc, Slurm overrides) taken out of a command's keyword arguments."""
    launcher = kwargs.pop("launcher")
    nproc = kwargs.pop("nproc")
    slurm = {k: kwargs.pop(k) for k in SLURM_FIELDS}
    return launcher, nproc, {k: v for k, v in slurm.items() if v is not None}
