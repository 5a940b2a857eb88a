"""Command-line choices read from a registry (samplers, guidance kinds, launchers) when they are parsed or shown."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import click


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
