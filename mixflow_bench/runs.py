"""Where runs write: ``runs/<name>/`` under the working directory, unless a command is given ``--run-dir``.

A run's folder holds everything the run produces, its result records in ``<run>/results/`` included;
``mixflow-bench table`` reads the records of every run under ``runs/``. Nothing a run produces goes anywhere else:
the results committed to the repository (``results/``) change only through ``mixflow-bench table
--update-committed``.
"""

from __future__ import annotations

from pathlib import Path

RUNS = Path("runs")


def run_dir(name: str) -> Path:
    """The default folder of run ``name`` (a recipe's name, or ``eval`` for evaluations outside a run)."""
    return RUNS / name


def records_dir(run: str | Path) -> Path:
    """Where a run's result records go."""
    return Path(run) / "results"
