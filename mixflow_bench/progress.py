"""Rich progress bars for image work (sampling, evaluation, packing): images done, images/s and time left."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
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
    """Images per second over rich's sliding window."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("-- img/s" if speed is None else f"{speed:,.1f} img/s", style="progress.data.speed")


def image_progress(console: Console | None = None, disable: bool = False) -> Progress:
    """A progress bar with count, images/s, elapsed time and ETA."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console or Console(stderr=True),
        disable=disable,
    )


@contextmanager
def progress_bar(label: str, enabled: bool = True, total: int | None = None) -> Iterator[Callable[[int], None]]:
    """An image progress bar on stderr as an ``advance(n)`` callback; shows nothing when ``enabled`` is False."""
    if not enabled:
        yield lambda n: None
        return
    with image_progress() as prog:
        task = prog.add_task(label, total=total)
        yield lambda n: prog.advance(task, n)
