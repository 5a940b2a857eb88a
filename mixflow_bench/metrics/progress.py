"""A rich progress bar (rate and ETA) exposed as an ``advance(n)`` callback."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text


class RateColumn(ProgressColumn):
    """Images per second."""

    def render(self, task: Task) -> Text:
        return Text("  ?   img/s" if task.speed is None else f"{task.speed:7.1f} img/s")


@contextmanager
def progress_bar(
    label: str, enabled: bool = True, total: int | None = None
) -> Iterator[Callable[[int], None]]:
    """Yields ``advance(n)``; shows nothing when ``enabled`` is False."""
    if not enabled:
        yield lambda n: None
        return
    from mixflow_bench.cli.common import err_console

    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console,
    ) as prog:
        task = prog.add_task(label, total=total)
        yield lambda n: prog.advance(task, n)
