"""`mixflow-bench train`: (post-)train a recipe's model; the EMA weights go to <run-dir>/train/model.pt."""

from __future__ import annotations

from pathlib import Path

import click

from mixflow_bench.cli.common import console, writable_dir
from mixflow_bench.launch.options import launch_options, pop_launch_options


@click.command(name="train")
@click.argument("recipe")
@click.argument("overrides", nargs=-1)
@click.option("--run-dir", type=click.Path(path_type=Path), default=None, help="default: runs/<recipe>")
@launch_options
def command(recipe, overrides, run_dir, **kwargs) -> None:
    """Train RECIPE's model (its train: section), resuming from the last checkpoint."""
    from mixflow_bench.launch import get_launcher
    from mixflow_bench.pipeline.reproduce import reproduce
    from mixflow_bench.recipes.loader import load_recipe, parse_overrides
    from mixflow_bench.runs import run_dir as default_run_dir

    launcher_name, nproc, slurm = pop_launch_options(kwargs)
    ov = parse_overrides(overrides)
    r = load_recipe(recipe, ov)
    if r.study is not None or r.mixed_source is not None or r.image_study is not None:
        raise click.ClickException(f"{r.name} is a study that trains its own models: mixflow-bench reproduce {r.name}")
    if r.train is None:
        raise click.ClickException(f"recipe {r.name} has no train: section")
    run_dir = writable_dir(run_dir or default_run_dir(r.name))
    from mixflow_bench.launch.tasks import LaunchError

    try:
        launcher = get_launcher(launcher_name, run_dir=run_dir, slurm_section=r.slurm, slurm_overrides=slurm,
                                nproc=nproc)  # fmt: skip
        reproduce(recipe, overrides=ov, run_dir=run_dir, launcher=launcher, only_stage="train", console=console)
    except LaunchError as e:  # a failed, cancelled or lost job: one line naming the job and its log
        raise click.ClickException(str(e)) from e
    console.print(f"[green]model:[/] {run_dir / 'train' / 'model.pt'}")
