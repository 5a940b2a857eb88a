"""Helpers shared by the CLI commands: the rich console, output-folder checks, the 'not available yet' refusal,
registry choices."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import click
from rich.console import Console

from mixflow_bench.errors import UserError

console = Console()
err_console = Console(stderr=True)


def writable_dir(path: Path, option: str = "--run-dir") -> Path:
    """``path`` created (with its parents) and writable, or a :class:`UserError` naming ``option`` and why."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{option} {path}: cannot create it ({exc.strerror or exc})") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise UserError(f"{option} {path}: not writable")
    return path


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
