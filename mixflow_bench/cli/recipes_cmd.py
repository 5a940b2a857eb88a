"""`mixflow-bench recipes list|show`."""

from __future__ import annotations

import click
import yaml
from rich import box
from rich.syntax import Syntax
from rich.table import Table

from mixflow_bench.cli.common import console
from mixflow_bench.recipes import RecipeError, find_recipe, list_recipes, load_recipe
from mixflow_bench.recipes.schema import Recipe
from mixflow_bench.terminal import fits


@click.group(name="recipes")
def command() -> None:
    """List and show experiment recipes."""


def training_summary(r: Recipe) -> str:
    """What a recipe trains, in steps: a pipeline's train: section, or a small study's runs."""
    from mixflow_bench.pipeline.stages import controls

    if r.study is not None and r.study.kind == "gmflow":
        return f"study: {len(r.study.components)} GM models + FM, {r.study.baseline_steps:,} steps each"
    if r.study is not None:
        return f"study: baseline {r.study.baseline_steps:,} + post-training {r.study.posttrain_steps:,} steps"
    if r.mixed_source is not None:
        return f"study: {r.mixed_source.steps:,} steps per method"
    if r.train is None:
        return "-"
    train = f"{r.train.objective.kind} {r.train.steps:,} steps"
    return train + (" + " + ", ".join(controls(r)) if controls(r) else "")


@command.command(name="list")
def list_cmd() -> None:
    """List the recipes with their model, what they train and sample, and a description.

    Names are shown whole; in a terminal too narrow for one column each, model, training, sampling and
    description share one wrapped column."""
    rows = []
    for name in list_recipes():
        try:
            r = load_recipe(name)
        except RecipeError as e:
            rows.append((name, "[red]invalid[/red]", "", "", str(e)))
            continue
        sample = f"{r.sample.sampler}-{r.sample.steps} {r.sample.guidance.kind}" if r.sample else "-"
        rows.append((name, r.model.name, training_summary(r), sample, r.description))
    table = Table(title="Recipes")
    for col in ("name", "model", "train", "sample", "description"):
        table.add_column(col, no_wrap=col != "description")
    for row in rows:
        table.add_row(*row)
    if not fits(table, console.width):
        table = Table(title="Recipes", box=box.SIMPLE_HEAD, pad_edge=False)
        table.add_column("name", no_wrap=True)
        table.add_column("model · train · sample / description", overflow="fold")
        for name, model, train, sample, description in rows:
            table.add_row(name, f"{model} · {train} · {sample}\n[dim]{description}[/dim]", end_section=True)
    console.print(table)


@command.command(name="show")
@click.argument("name")
def show_cmd(name: str) -> None:
    """Show a recipe with its bases merged and every default filled in."""
    try:
        recipe = load_recipe(name)
    except RecipeError as e:
        raise click.ClickException(str(e)) from e
    console.print(f"[bold]{recipe.name}[/bold]  ({find_recipe(name)})")
    data = recipe.to_dict()
    data.pop("source", None)
    console.print(Syntax(yaml.safe_dump(data, sort_keys=False), "yaml"))
