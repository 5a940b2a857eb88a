"""`mixflow-bench reproduce`: run a recipe end to end (download, post-train, sample, evaluate, table)."""

from __future__ import annotations

from pathlib import Path

import click

from mixflow_bench.cli.common import console
from mixflow_bench.launch.options import launch_options, pop_launch_options


@click.command(name="reproduce")
@click.argument("recipe")
@click.argument("overrides", nargs=-1)
@click.option("--plan", "show_plan", is_flag=True, help="show the stages, what is done and a GPU-hour estimate")
@click.option("--stage", default=None, help="run only this stage")
@click.option("--run-dir", type=click.Path(path_type=Path), default=None, help="default: runs/<recipe>")
@launch_options
def command(recipe, overrides, show_plan, stage, run_dir, **kwargs) -> None:
    """Reproduce RECIPE (KEY.PATH=VALUE overrides); stages whose manifest matches are skipped."""
    from mixflow_bench.cli.sample_cmd import _overrides
    from mixflow_bench.launch import get_launcher
    from mixflow_bench.pipeline.reproduce import default_run_dir, plan, plan_table, reproduce
    from mixflow_bench.recipes.loader import load_recipe

    launcher_name, nproc, slurm = pop_launch_options(kwargs)
    ov = _overrides(overrides)
    if show_plan:
        r, _, rows = plan(recipe, ov, run_dir)
        console.print(plan_table(r.name, rows))
        for note in r.notes:
            console.print(f"[dim]note:[/] {note}")
        return
    r = load_recipe(recipe, ov)
    run_dir = run_dir or default_run_dir(r.name)
    launcher = get_launcher(launcher_name, run_dir=run_dir, slurm_section=r.slurm, slurm_overrides=slurm, nproc=nproc)
    try:
        outcome = reproduce(recipe, overrides=ov, run_dir=run_dir, launcher=launcher, only_stage=stage, console=console)
    except (ValueError, RuntimeError) as e:
        raise click.ClickException(str(e)) from e
    table = run_dir / "table.json"
    if table.exists():
        console.print_json(table.read_text())
    console.print(f"stages: {outcome}")
