"""Helpers shared by the CLI commands: the rich console, the 'not available yet' refusal, registry choices."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import click
from rich.console import Console

console = Console()
err_console = Console(stderr=True)


def not_available(what: str) -> None:
    """Refuse a capability that this build does not have yet, with a non-zero exit."""
    raise click.ClickException(f"{what} is not available yet in this version of mixflow-bench.")


class RegistryChoice(click.Choice):
    """A ``click.Choice`` whose choices are read from a registry when the option is parsed or shown, so that an
    entry registered after this module was imported (a plug-in, a test) is accepted too."""

    def __init__(self, names: Callable[[], Sequence[str]]) -> None:
        self._names = names
        super().__init__(list(names()))

    @property
    def choices(self) -> Sequence[str]:
        return tuple(self._names())

    @choices.setter
    def choices(self, value: Sequence[str]) -> None:  # click.Choice.__init__ assigns it
        pass
