"""The results committed to the repository (``results/`` of the checkout), refreshed from runs only on request:
``mixflow-bench table --update-committed``. Runs themselves never write there.

Layout: ``produced/<record>.json``, the published result records; each small study's write-up (``study.json``,
``table.md``, figures) in the folder of its kind: ``studies/<recipe>/`` (the MixFlow studies),
``mixed-source/<recipe>/`` (κ-FC mixed source), ``<recipe>/`` (the GMFlow checkerboard) and ``regime/<recipe>/``
(the regime study); ``README.md``,
generated from them by ``table``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mixflow_bench.atomic import atomic_write
from mixflow_bench.results.records import load_records

COMMITTED = Path("results")
# the files of a study's run folder that make its write-up (each study writes some of them)
WRITE_UP = (
    "study.json", "table.md", "fd_vs_steps.png", "slow_flow.json", "slow_flow.png", "histograms.png",
    "quality_vs_nfe.png", "beta_sweep.png", "curvature.png",
)  # fmt: skip


# the regime study's write-up (mixflow_bench.experiments.regime), committed under regime/<recipe>/
REGIME_FILES = ("regime.json", "regime.png", "summary.md")


def write_up_folder(recipe: dict[str, Any]) -> str | None:
    """Where the write-up of a study recipe (as its records carry it) is committed; None for other recipes."""
    name, study = recipe.get("name"), recipe.get("study") or {}
    if not name:
        return None
    if recipe.get("mixed_source"):
        return f"mixed-source/{name}"
    if study.get("kind") == "gmflow":
        return name
    return f"studies/{name}" if study else None


def _copy(source: Path, dest: Path) -> Path:
    data = source.read_bytes()
    return atomic_write(dest, lambda handle: handle.write(data))


def copy_into_committed(runs: Path, committed: Path = COMMITTED) -> list[Path]:
    """Copy every result record under ``runs`` into ``committed/produced/``, and the write-up files of each study
    run into its folder (:func:`write_up_folder`); returns the files written."""
    written: list[Path] = []
    done: set[Path] = set()
    for record in load_records(runs):
        path = Path(record["path"])
        written.append(_copy(path, committed / "produced" / path.name))
        run = path.parent.parent  # records lie in <run>/results/
        folder = write_up_folder(record.get("recipe") or {})
        if folder is None or run in done:
            continue
        done.add(run)
        written += [_copy(run / f, committed / folder / f) for f in WRITE_UP if (run / f).is_file()]
    for result in sorted(Path(runs).rglob("regime.json")):  # the regime study writes no records: its folder
        name = json.loads(result.read_text())["recipe"]
        written += [_copy(result.parent / f, committed / "regime" / name / f) for f in REGIME_FILES
                    if (result.parent / f).is_file()]  # fmt: skip
    return written
