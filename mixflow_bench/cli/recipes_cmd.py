"""`mixflow-bench recipes list|show`."""

from __future__ import annotations

import click
import yaml
from rich.syntax import Syntax
from rich.table import Table

from mixflow_bench.cli.common import console
from mixflow_bench.recipes import RecipeError, find_recipe, list_recipes, load_recipe


@click.group(name="recipes")
def command() -> None:
    """List and show experiment recipes."""


@command.command(name="list")
def list_cmd() -> None:
    """List the recipes with their model and what they run."""
    from mixflow_bench.pipeline.stages import controls

    table = Table(title="Recipes")
    for col in ("name", "model", "train", "sample", "description"):
        table.add_column(col)
    for name in list_recipes():
        try:
            r = load_recipe(name)
        except RecipeError as e:
            table.add_row(name, "[red]invalid[/red]", "", "", str(e))
            continue
        train = f"{r.train.objective.kind} {r.train.steps} steps" if r.train else "-"
        if controls(r):
            train += " + " + ", ".join(controls(r))
        sample = f"{r.sample.sampler}-{r.sample.steps} {r.sample.guidance.kind}" if r.sample else "-"
        table.add_row(name, r.model.name, train, sample, r.description)
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
