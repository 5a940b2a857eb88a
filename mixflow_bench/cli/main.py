"""The ``mixflow-bench`` entry point: one click group, one module per command."""

from __future__ import annotations

import importlib

import click

from mixflow_bench import __version__

# command name -> module under mixflow_bench.cli that defines ``command``
COMMANDS: dict[str, str] = {
    "recipes": "recipes_cmd",
    "train": "train_cmd",
    "sample": "sample_cmd",
    "eval": "eval_cmd",
    "pack": "pack_cmd",
    "table": "table_cmd",
    "reproduce": "reproduce_cmd",
    "analyze": "analyze_cmd",
    "download": "download_cmd",
    "data": "data_cmd",
    "jobs": "jobs_cmd",
}


class LazyGroup(click.Group):
    """Imports a command's module only when that command runs (keeps ``--help`` fast)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module = importlib.import_module(f"mixflow_bench.cli.{COMMANDS[name]}")
        return module.command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mixflow-bench")
def cli() -> None:
    """Benchmark and reproduce flow-matching image generators, with MixFlow post-training."""


def main() -> None:
    cli()
