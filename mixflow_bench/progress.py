"""Progress for long work (training, sampling, evaluation, data preparation, the studies), in a terminal and in logs.

Where stdout is a terminal, a rich bar on stderr: count, rate, elapsed time and ETA. Where it is not (``> log``,
a Slurm or torchrun log), :class:`LogProgress` writes plain lines to stdout instead: one when a task starts, one
every ``MIXFLOW_BENCH_PROGRESS_INTERVAL`` seconds (default 30) while it advances, and one when it ends, each with
done/total, the rate and the ETA; never a carriage return. Rates are the average since the task started (or
resumed), not over the last update, which misleads when updates are rare (4 images in 75 s is 0.05 img/s).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

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

INTERVAL_ENV = "MIXFLOW_BENCH_PROGRESS_INTERVAL"
DEFAULT_INTERVAL_S = 30.0


def average_rate(done_since_start: float, elapsed_s: float | None) -> float | None:
    """Units per second since the start (None before any time has passed or anything was done)."""
    if not elapsed_s or elapsed_s <= 0 or done_since_start <= 0:
        return None
    return done_since_start / elapsed_s


def format_rate(rate: float | None, unit: str) -> str:
    """``12.3 img/s``; ``0.053 img/s`` for slow work; ``-- img/s`` when unknown."""
    if rate is None:
        return f"-- {unit}/s"
    return f"{rate:,.1f} {unit}/s" if rate >= 1 else f"{rate:.3g} {unit}/s"


def format_eta(seconds: float | None) -> str:
    return "?" if seconds is None else str(timedelta(seconds=round(seconds)))


class RateColumn(ProgressColumn):
    """Units per second, averaged since the task started or resumed (field ``resumed_at``: the count it resumed at)."""

    def __init__(self, unit: str = "img") -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        rate = average_rate(task.completed - task.fields.get("resumed_at", 0), task.elapsed)
        return Text(format_rate(rate, task.fields.get("unit", self.unit)), style="progress.data.speed")


class TerminalProgress(Progress):
    """A rich progress display that remembers where each task resumed, for :class:`RateColumn`."""

    def add_task(self, description: str, start: bool = True, total: float | None = 100.0, completed: int = 0,
                 visible: bool = True, **fields: Any) -> Any:  # fmt: skip
        fields.setdefault("resumed_at", completed)
        return super().add_task(description, start, total, completed, visible, **fields)


@dataclass
class _LogTask:
    description: str
    total: float | None
    completed: float
    start: float
    fields: dict[str, Any]
    started_at: float  # time.monotonic()
    last_line: float
    finished: bool = False


class LogProgress:
    """The part of rich's ``Progress`` interface the project uses, writing one plain line at intervals."""

    def __init__(self, console: Console | None = None, unit: str = "img", interval_s: float | None = None,
                 disable: bool = False) -> None:  # fmt: skip
        self.console = console or Console(soft_wrap=True)
        self.unit = unit
        self.interval_s = float(os.environ.get(INTERVAL_ENV, DEFAULT_INTERVAL_S)) if interval_s is None else interval_s
        self.disable = disable
        self.tasks: dict[int, _LogTask] = {}

    def __enter__(self) -> LogProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        for task_id, task in self.tasks.items():
            if not task.finished and exc[0] is None:
                self._line(task_id, "done")

    def add_task(self, description: str, total: float | None = None, completed: float = 0, **fields: Any) -> int:
        task_id = len(self.tasks)
        now = time.monotonic()
        self.tasks[task_id] = _LogTask(description, total, completed, completed, fields, now, now)
        self._line(task_id, "started")
        return task_id

    def advance(self, task_id: int, advance: float = 1) -> None:
        self.update(task_id, advance=advance)

    def update(self, task_id: int, *, total: float | None = None, completed: float | None = None,
               advance: float | None = None, description: str | None = None, **fields: Any) -> None:  # fmt: skip
        task = self.tasks[task_id]
        if total is not None:
            task.total = total
        if completed is not None:
            task.completed = completed
        if advance is not None:
            task.completed += advance
        if description is not None:
            task.description = description
        task.fields.update(fields)
        now = time.monotonic()
        if task.total is not None and task.completed >= task.total and not task.finished:
            self._line(task_id, "done")
        elif now - task.last_line >= self.interval_s:
            self._line(task_id)

    def line(self, task_id: int, state: str = "") -> str:
        """The task's progress line: ``label: 40/100 img (40%), 1.3 img/s, ETA 0:00:46``."""
        task = self.tasks[task_id]
        elapsed = time.monotonic() - task.started_at
        rate = average_rate(task.completed - task.start, elapsed)
        unit = task.fields.get("unit", self.unit)
        done = f"{task.completed:,.0f}" + (f"/{task.total:,.0f}" if task.total else "") + f" {unit}"
        if task.total:
            done += f" ({100 * task.completed / task.total:.0f}%)"
        parts = [done, format_rate(rate, unit), f"elapsed {format_eta(elapsed)}"]
        if task.total and state != "done":
            left = task.total - task.completed
            parts.append(f"ETA {format_eta(left / rate if rate else None)}")
        shown = {k: v for k, v in task.fields.items() if k not in ("resumed_at", "unit") and v not in ("", "-", None)}
        parts += [f"{k.replace('_', ' ')} {v}" for k, v in shown.items()]
        head = f"{task.description}: " + (f"{state}, " if state else "")
        return head + ", ".join(parts)

    def _line(self, task_id: int, state: str = "") -> None:
        task = self.tasks[task_id]
        task.last_line = time.monotonic()
        task.finished = task.finished or state == "done"
        if not self.disable:
            self.console.print(self.line(task_id, state), markup=False, highlight=False)
            _flush(self.console)


def _flush(console: Console) -> None:
    file = getattr(console, "file", None) or sys.stdout
    with suppress(OSError, ValueError):  # a closed or detached stream: nothing to flush
        file.flush()


def stdout_is_terminal() -> bool:
    """Whether the user watches stdout (else it goes to a log file, a pipe or a Slurm log)."""
    return Console().is_terminal


def progress_display(*columns: ProgressColumn | str, console: Console | None = None, disable: bool = False,
                     unit: str = "img") -> TerminalProgress | LogProgress:  # fmt: skip
    """A rich bar on stderr (``columns``) where stdout is a terminal, else :class:`LogProgress` lines on stdout."""
    if stdout_is_terminal():
        return TerminalProgress(*columns, console=console or Console(stderr=True), disable=disable)
    return LogProgress(unit=unit, disable=disable)


def image_progress(console: Console | None = None, disable: bool = False) -> TerminalProgress | LogProgress:
    """Images done, images/s, elapsed time and ETA (a bar, or lines in a log)."""
    return progress_display(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        disable=disable,
    )


def step_progress(console: Console | None = None, disable: bool = False) -> TerminalProgress | LogProgress:
    """Work counted in steps (or in the ``unit`` field of a task): training steps, a study's phases."""
    return progress_display(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn("steps"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        disable=disable,
        unit="steps",
    )


@contextmanager
def progress_bar(label: str, enabled: bool = True, total: int | None = None) -> Iterator[Callable[[int], None]]:
    """Image progress as an ``advance(n)`` callback (a bar, or lines in a log); nothing when ``enabled`` is False."""
    if not enabled:
        yield lambda n: None
        return
    with image_progress() as prog:
        task = prog.add_task(label, total=total)
        yield lambda n: prog.advance(task, n)
