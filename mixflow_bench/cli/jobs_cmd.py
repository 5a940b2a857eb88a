"""`mixflow-bench jobs`: the Slurm jobs submitted from run directories, their state and logs."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from mixflow_bench.cli.common import console, json_option, write_json_output
from mixflow_bench.runs import RUNS


@click.command(name="jobs")
@click.option("--run-dir", type=click.Path(path_type=Path), default=RUNS, show_default=True,
              help="a run directory, or a folder of them")  # fmt: skip
@json_option("write the jobs as JSON to PATH; '-' or no PATH: print JSON instead of the table")
def command(run_dir: Path, json_path: Path | None) -> None:
    """List submitted jobs with their state (squeue / sacct / result files) and log paths."""
    from mixflow_bench.launch.registry import find_registries

    jobs = [job for reg in find_registries(run_dir) for job in reg.with_states()]
    if write_json_output(json_path, jobs):
        return
    if not jobs:
        console.print(f"no jobs registered under {run_dir}")
        return
    table = Table(title=f"jobs under {run_dir}")
    for col in ("job", "name", "stage", "tasks", "state", "submitted", "stdout", "stderr"):
        table.add_column(col, overflow="fold")
    for j in jobs:
        table.add_row(j["job_id"], j["name"], j.get("stage", ""), str(j.get("tasks", 1)), j["state"],
                      j.get("submitted", ""), j["stdout"], j["stderr"])  # fmt: skip
    console.print(table)
