"""`mixflow-bench sample`."""

from __future__ import annotations

import click

from mixflow_bench.cli.common import not_available


@click.command(name="sample", context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def command(args: tuple[str, ...]) -> None:
    """(not available yet)"""
    not_available("`mixflow-bench sample`")
