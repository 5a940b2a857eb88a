"""Helpers shared by the CLI commands: the rich console and the 'not available yet' refusal."""

from __future__ import annotations

import click
from rich.console import Console

console = Console()
err_console = Console(stderr=True)


def not_available(what: str) -> None:
    """Refuse a capability that this build does not have yet, with a non-zero exit."""
    raise click.ClickException(f"{what} is not available yet in this version of mixflow-bench.")
