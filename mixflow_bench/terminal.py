"""Fitting rich tables to the terminal: a table is shown wide only where every cell fits whole."""

from __future__ import annotations

from typing import Any


def min_width(renderable: Any) -> int:
    """The narrowest width at which ``renderable`` shows every cell whole (words unbroken, no ellipsis)."""
    from rich.console import Console
    from rich.measure import Measurement

    console = Console(width=100_000)
    return Measurement.get(console, console.options, renderable).minimum


def fits(renderable: Any, width: int | None) -> bool:
    """Whether ``renderable`` reads whole in ``width`` columns (always, where ``width`` is None)."""
    return width is None or min_width(renderable) <= width


def stacked(title: str, columns: list[str], rows: list[list[str]]) -> Any:
    """A table for a narrow terminal: the first column whole, the others as ``column: value`` lines beside it."""
    from rich import box
    from rich.table import Table

    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column(columns[0], no_wrap=True)
    table.add_column(" / ".join(columns[1:]), overflow="fold")
    for first, *rest in rows:
        table.add_row(first, "\n".join(f"[dim]{c}:[/] {v}" for c, v in zip(columns[1:], rest) if v), end_section=True)
    return table


def fitted(title: str, columns: list[str], rows: list[list[str]], width: int | None, **wide: Any) -> Any:
    """One row per line where that fits ``width`` whole (``wide``: rich Table options), else :func:`stacked`."""
    from rich.table import Table

    table = Table(title=title, **wide)
    for i, column in enumerate(columns):
        table.add_column(column, no_wrap=i == 0)
    for row in rows:
        table.add_row(*row)
    return table if fits(table, width) else stacked(title, columns, rows)
