"""Produced results beside reported numbers: the join, and its renderings (rich, Markdown, LaTeX, CSV, JSON).

Records whose ``(experiment, method, guidance)`` matches a reported entry form the comparison table. A produced
number is set beside a reported one (with their difference) only when its protocol agrees with the reported
protocol on every field the source states (:func:`mixflow_bench.results.protocol.compare`); a record of the same
experiment measured another way gets a row of its own, with its protocol and a note of the differing fields, and
no difference is computed. Other records (e.g. the small CPU ``study`` reproduction) are shown
generically: one table per experiment, rows = record name / method, columns = the records' metric keys, where a
``<m>_std`` key is shown as ``mean ± std`` beside ``<m>`` or ``<m>_mean``.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mixflow_bench.results.protocol import compare, describe, record_protocol
from mixflow_bench.results.records import method_and_variant
from mixflow_bench.results.reported import ReportedEntry
from mixflow_bench.terminal import fits

METRIC_ORDER = ("fid", "sfid", "is", "precision", "recall", "fid_gain")
METRIC_LABELS = {
    "fid": "FID",
    "sfid": "sFID",
    "is": "IS",
    "precision": "Prec",
    "recall": "Rec",
    "fid_gain": "FID gain",
}
FULL_EVAL = 50_000


@dataclass
class ComparisonRow:
    """One (experiment, method, variant, guidance) row: a reported number with the produced one measured the same way
    (``status`` ``match``), without one (``unproduced``), or a produced number whose protocol differs from the
    reported row's (``mismatch``: no reported value, no difference; ``note`` names the differing fields)."""

    experiment: str
    method: str
    variant: str
    guidance: str
    produced: dict[str, float] = field(default_factory=dict)
    reported: dict[str, float] = field(default_factory=dict)
    num_samples: int | None = None
    record: str | None = None  # name of the produced record
    reported_key: str | None = None
    protocol: dict[str, Any] | None = None  # the reported protocol; the produced one for a mismatch row
    status: str = "unproduced"  # match | unproduced | mismatch
    note: str = ""

    def delta(self, metric: str) -> float | None:
        if self.status == "match" and metric in self.produced and metric in self.reported:
            return self.produced[metric] - self.reported[metric]
        return None


@dataclass
class GenericTable:
    """Records without a reported entry, grouped by experiment."""

    experiment: str
    columns: list[str]
    rows: list[dict[str, Any]]  # {"name", "method", "variant", "cells": {column: (mean, std | None)}, "num_samples"}


@dataclass
class ResultsTable:
    comparison: list[ComparisonRow]
    generic: list[GenericTable]

    @property
    def metrics(self) -> list[str]:
        """Metrics with a value in any comparison row, in the canonical order."""
        present = {m for r in self.comparison for m in (*r.produced, *r.reported)}
        return [m for m in METRIC_ORDER if m in present] + sorted(present - set(METRIC_ORDER))


KEY_COLUMNS = ("experiment", "method", "variant", "guidance")  # what joins a record with a reported entry


def _record_key(record: dict[str, Any]) -> tuple[str, str, str, str]:
    return (str(record.get("experiment")), *method_and_variant(record), str(record.get("guidance") or "none"))


def build_table(
    records: list[dict[str, Any]], reported: list[ReportedEntry], *, include_unproduced: bool = True
) -> ResultsTable:
    """Join ``records`` (oldest first) with ``reported`` entries on (experiment, method, variant, guidance) and
    protocol (records written before the variant field are read as :func:`method_and_variant` says).

    Per entry, the newest record whose protocol agrees is compared; the newest record of every other protocol
    (newer than the compared one) is shown in a mismatch row beneath it.
    """
    by_key = {e.join_key: e for e in reported}
    keyed: dict[tuple[str, str, str, str], list[dict[str, Any]]] = {}
    unmatched: list[dict[str, Any]] = []
    for rec in records:
        key = _record_key(rec)
        if key in by_key:
            keyed.setdefault(key, []).append(rec)
        else:
            unmatched.append(rec)
    rows = []
    for entry in reported:
        match: dict[str, Any] | None = None
        others: dict[str, tuple[dict[str, Any], list[str]]] = {}  # produced protocol -> newest record, diffs
        for rec in keyed.get(entry.join_key, []):  # oldest first: later records replace earlier ones
            protocol = record_protocol(rec)
            differs, _ = compare(protocol, entry.protocol)
            if differs:
                others[describe(protocol)] = (rec, differs)
            else:
                match = rec
                others = {}  # older mismatches are superseded by a newer comparable record
        _, unstated = compare(None, entry.protocol)
        unstated_note = f"paper does not state: {', '.join(unstated)}" if unstated else ""
        if match is not None or include_unproduced or others:
            rows.append(
                ComparisonRow(
                    experiment=entry.experiment, method=entry.method, variant=entry.variant, guidance=entry.guidance,
                    produced=_metrics(match), reported=dict(entry.metrics),
                    num_samples=(match or {}).get("num_samples"), record=(match or {}).get("name"),
                    reported_key=entry.key, protocol=entry.protocol,
                    status="match" if match is not None else "unproduced", note=unstated_note,
                )
            )  # fmt: skip
        for rec, differs in others.values():
            rows.append(
                ComparisonRow(
                    experiment=entry.experiment, method=entry.method, variant=entry.variant, guidance=entry.guidance,
                    produced=_metrics(rec), reported={}, num_samples=rec.get("num_samples"), record=rec.get("name"),
                    reported_key=entry.key, protocol=record_protocol(rec), status="mismatch",
                    note=f"not comparable with the reported row: {'; '.join(differs)}",
                )
            )  # fmt: skip
    return ResultsTable(rows, _generic_tables(unmatched))


def _metrics(rec: dict[str, Any] | None) -> dict[str, float]:
    return {k: float(v) for k, v in (rec or {}).get("metrics", {}).items() if _is_number(v)}


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))


def _generic_tables(records: list[dict[str, Any]]) -> list[GenericTable]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for rec in records:
        groups.setdefault(str(rec.get("experiment") or rec.get("kind") or "other"), []).append(rec)
    tables = []
    for experiment, recs in groups.items():
        latest: dict[tuple[str, str, str], dict[str, Any]] = {}
        for rec in recs:  # newest record per (name, method, variant) wins
            latest[(str(rec.get("name")), *method_and_variant(rec))] = rec
        rows, columns = [], []
        for (name, method, variant), rec in latest.items():
            cells = _pair_std(rec.get("metrics") or {})
            columns += [c for c in cells if c not in columns]
            rows.append({"name": name, "method": method, "variant": variant, "cells": cells,
                         "num_samples": rec.get("num_samples"),
                         "protocol": describe(record_protocol(rec))})  # fmt: skip
        tables.append(GenericTable(experiment, columns, rows))
    return tables


def _pair_std(metrics: dict[str, Any]) -> dict[str, tuple[float, float | None]]:
    """``{"fd": 1, "fd_std": .1}`` or ``{"fd_mean": 1, "fd_std": .1}`` -> ``{"fd": (1, .1)}``."""
    cells: dict[str, tuple[float, float | None]] = {}
    for key, value in metrics.items():
        if not _is_number(value) or key.endswith("_std"):
            continue
        base = key[: -len("_mean")] if key.endswith("_mean") else key
        std = metrics.get(f"{base}_std")
        cells[base] = (float(value), float(std) if _is_number(std) else None)
    for key, value in metrics.items():  # a lone std without its mean still shows
        if key.endswith("_std") and _is_number(value) and key[:-4] not in cells:
            cells[key] = (float(value), None)
    return cells


# --- formatting ------------------------------------------------------------------------------------------------
def format_value(metric: str, value: float | None, signed: bool = False) -> str:
    if value is None:
        return ""
    digits = 3 if metric in ("precision", "recall") else 2
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def format_count(n: int | None) -> str:
    """``10000 -> '10K'``, ``1500 -> '1.5K'``, ``500 -> '500'``."""
    if n is None:
        return "?"
    if n >= 1000:
        k = n / 1000
        return f"{k:.0f}K" if float(k).is_integer() else f"{k:.1f}K"
    return str(n)


def format_produced(row: ComparisonRow, metric: str) -> str:
    """The produced value, with its sample count when below the full 50K evaluation (``2.31 (10K)``)."""
    if metric not in row.produced:
        return ""
    text = format_value(metric, row.produced[metric])
    if row.num_samples is None or row.num_samples < FULL_EVAL:
        text += f" ({format_count(row.num_samples)})"
    return text


def format_cell(cell: tuple[float, float | None]) -> str:
    mean, std = cell
    return f"{mean:.4g} ± {std:.2g}" if std is not None else f"{mean:.4g}"


def comparison_header(metrics: list[str]) -> list[str]:
    head = [*(c.capitalize() for c in KEY_COLUMNS), "Protocol"]
    for m in metrics:
        label = METRIC_LABELS.get(m, m)
        head += [f"{label} produced", f"{label} reported", f"{label} Δ"]
    return [*head, "Note"]


def row_protocol(row: ComparisonRow) -> str:
    """The row's protocol in words; a mismatch row is marked as the produced protocol."""
    text = describe(row.protocol)
    return f"produced: {text}" if row.status == "mismatch" else text


def comparison_cells(row: ComparisonRow, metrics: list[str]) -> list[str]:
    cells = [*(getattr(row, c) for c in KEY_COLUMNS), row_protocol(row)]
    for m in metrics:
        cells += [format_produced(row, m), format_value(m, row.reported.get(m)), format_value(m, row.delta(m), True)]
    return [*cells, row.note]


def generic_header(table: GenericTable) -> list[str]:
    return ["Name", "Method", "Variant", *table.columns, "Samples", "Protocol"]


def generic_cells(table: GenericTable, row: dict[str, Any]) -> list[str]:
    cells = [row["name"], row["method"], row["variant"]]
    cells += [format_cell(row["cells"][c]) if c in row["cells"] else "" for c in table.columns]
    return [*cells, "" if row["num_samples"] is None else str(row["num_samples"]), row.get("protocol", "")]


# --- renderers -------------------------------------------------------------------------------------------------
# descriptive columns of the terminal view, selectable with ``mixflow-bench table --columns``
VIEW_COLUMNS = (*KEY_COLUMNS, "protocol", "note")


def to_rich(
    table: ResultsTable,
    width: int | None = None,
    metrics: list[str] | None = None,
    columns: tuple[str, ...] = VIEW_COLUMNS,
) -> list[Any]:
    """Rich tables for a terminal ``width`` columns wide: the comparison, then one per generic group.

    ``metrics`` (default: all) and ``columns`` (of :data:`VIEW_COLUMNS`) choose what is shown. A table whose
    narrowest rendering is wider than ``width`` is shown in long form (one line per row and metric, the row's
    protocol and note under its name), so that every number stays readable in a narrow terminal or a pipe.
    """
    metrics = table.metrics if metrics is None else metrics
    out = []
    wide = _wide_comparison(table, metrics, columns)
    out.append(wide if fits(wide, width) else _long_comparison(table, metrics, columns))
    for g in table.generic:
        wide = _wide_generic(g)
        out.append(wide if fits(wide, width) else _long_generic(g))
    return out


def _metric_cell(row: ComparisonRow, m: str) -> tuple[str, str, str]:
    """(produced, reported, Δ) of metric ``m`` in ``row``; a dash where one side has none."""
    produced, reported = format_produced(row, m) or "—", format_value(m, row.reported.get(m)) or "—"
    return produced, reported, format_value(m, row.delta(m), True)


def _wide_comparison(table: ResultsTable, metrics: list[str], columns: tuple[str, ...]) -> Any:
    from rich.table import Table

    t = Table(title="Produced vs reported (produced / reported / Δ)", header_style="bold")
    for c in KEY_COLUMNS:
        if c in columns:
            t.add_column(c.capitalize(), no_wrap=True)
    if "protocol" in columns:
        t.add_column("Protocol")
    for m in metrics:
        t.add_column(METRIC_LABELS.get(m, m), justify="right")
    if "note" in columns:
        t.add_column("Note")
    for row in table.comparison:
        cells = []
        for m in metrics:
            if m not in row.produced and m not in row.reported:
                cells.append("")
                continue
            produced, reported, delta = _metric_cell(row, m)
            cells.append(f"{produced}\n[dim]{reported}[/dim]" + (f"\n[bold]{delta}[/bold]" if delta else ""))
        style = "[yellow]" if row.status == "mismatch" else ""
        head = [getattr(row, c) for c in KEY_COLUMNS if c in columns]
        head += [style + row_protocol(row)] if "protocol" in columns else []
        t.add_row(*head, *cells, *([style + row.note] if "note" in columns else []))
    return t


def _long_comparison(table: ResultsTable, metrics: list[str], columns: tuple[str, ...]) -> Any:
    """The comparison with one line per (row, metric): fits 80 columns whatever the number of metrics."""
    from rich import box
    from rich.table import Table

    t = Table(title="Produced vs reported", header_style="bold", box=box.SIMPLE_HEAD, pad_edge=False)
    t.add_column("Row", overflow="fold")
    t.add_column("Metric", no_wrap=True)
    for h in ("Produced", "Reported", "Δ"):
        t.add_column(h, justify="right", no_wrap=True)
    for row in table.comparison:
        shown = [m for m in metrics if m in row.produced or m in row.reported]
        label = [" · ".join(getattr(row, c) for c in KEY_COLUMNS if c in columns)]
        style = "yellow" if row.status == "mismatch" else "dim"
        label += [f"[{style}]{row_protocol(row)}[/]"] if "protocol" in columns else []
        label += [f"[{style}]{row.note}[/]"] if "note" in columns and row.note else []
        if not shown:  # none of the chosen metrics: the row still shows
            t.add_row("\n".join(label), "", "", "", "", end_section=True)
        for i, m in enumerate(shown):
            t.add_row("\n".join(label) if i == 0 else "", METRIC_LABELS.get(m, m), *_metric_cell(row, m),
                      end_section=i == len(shown) - 1)  # fmt: skip
    return t


def _wide_generic(g: GenericTable) -> Any:
    from rich.table import Table

    gt = Table(title=f"{g.experiment} (no reported numbers)", header_style="bold")
    for i, h in enumerate(generic_header(g)):
        gt.add_column(h, justify="left" if i < 3 else "right")
    for row in g.rows:
        gt.add_row(*generic_cells(g, row))
    return gt


def _long_generic(g: GenericTable) -> Any:
    """A generic table with one line per (record, metric)."""
    from rich import box
    from rich.table import Table

    gt = Table(title=f"{g.experiment} (no reported numbers)", header_style="bold", box=box.SIMPLE_HEAD, pad_edge=False)
    gt.add_column("Record", overflow="fold")
    gt.add_column("Metric", overflow="fold")
    gt.add_column("Value", justify="right", no_wrap=True)
    gt.add_column("Samples", justify="right", no_wrap=True)
    for row in g.rows:
        label = " · ".join(x for x in (row["name"], row["method"], row["variant"]) if x)
        label += f"\n[dim]{row['protocol']}[/dim]" if row.get("protocol") else ""
        shown = [c for c in g.columns if c in row["cells"]]
        samples = "" if row["num_samples"] is None else str(row["num_samples"])
        for i, c in enumerate(shown or [""]):
            value = format_cell(row["cells"][c]) if c else ""
            gt.add_row(label if i == 0 else "", c, value, samples if i == 0 else "", end_section=i == len(shown) - 1)
    return gt


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def _md_table(header: list[str], rows: list[list[str]], n_left: int) -> str:
    lines = ["| " + " | ".join(_md_escape(h) for h in header) + " |"]
    lines.append("|" + "|".join("---" if i < n_left else "---:" for i in range(len(header))) + "|")
    lines += ["| " + " | ".join(_md_escape(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def to_markdown(table: ResultsTable, title: str | None = None) -> str:
    metrics = table.metrics
    parts = [f"# {title}\n"] if title else []
    parts.append("## Produced vs reported\n")
    parts.append(_md_table(comparison_header(metrics), [comparison_cells(r, metrics) for r in table.comparison], 5))
    for g in table.generic:
        parts.append(f"\n## {g.experiment}\n")
        parts.append(_md_table(generic_header(g), [generic_cells(g, r) for r in g.rows], 3))
    return "\n".join(parts) + "\n"


_LATEX_SPECIAL = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}"}


def _tex(text: str) -> str:
    text = "".join(_LATEX_SPECIAL.get(c, c) for c in text)
    return text.replace("Δ", r"$\Delta$").replace("±", r"$\pm$")


def to_latex(table: ResultsTable) -> str:
    """A booktabs ``tabular`` of the comparison (and one per generic group)."""
    blocks = []

    def tabular(header: list[str], rows: list[list[str]], n_left: int) -> str:
        spec = "l" * n_left + "r" * (len(header) - n_left)
        lines = [rf"\begin{{tabular}}{{{spec}}}", r"\toprule", " & ".join(_tex(h) for h in header) + r" \\"]
        lines.append(r"\midrule")
        lines += [" & ".join(_tex(c) for c in r) + r" \\" for r in rows]
        lines += [r"\bottomrule", r"\end{tabular}"]
        return "\n".join(lines)

    metrics = table.metrics
    blocks.append(tabular(comparison_header(metrics), [comparison_cells(r, metrics) for r in table.comparison], 5))
    for g in table.generic:
        blocks.append(f"% {g.experiment}\n" + tabular(generic_header(g), [generic_cells(g, r) for r in g.rows], 3))
    return "\n\n".join(blocks) + "\n"


CSV_FIELDS = ("section", "experiment", "method", "variant", "guidance", "name", "metric", "produced", "produced_std",
              "reported", "delta", "num_samples", "status", "protocol", "note")


def _num(v: float | None) -> str:
    return "" if v is None else repr(float(v))


def to_csv(table: ResultsTable) -> str:
    """Long format: one line per (row, metric), numbers at full precision."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_FIELDS)
    for r in table.comparison:
        for m in table.metrics:
            if m not in r.produced and m not in r.reported:
                continue
            w.writerow(["comparison", r.experiment, r.method, r.variant, r.guidance, r.record or "", m,
                        _num(r.produced.get(m)), "", _num(r.reported.get(m)), _num(r.delta(m)),
                        "" if r.num_samples is None else r.num_samples, r.status, describe(r.protocol), r.note])
    for g in table.generic:
        for row in g.rows:
            for c in g.columns:
                if c in row["cells"]:
                    mean, std = row["cells"][c]
                    w.writerow(["generic", g.experiment, row["method"], row["variant"], "", row["name"], c, _num(mean),
                                _num(std),
                                "", "", "" if row["num_samples"] is None else row["num_samples"], "",
                                row.get("protocol", ""), ""])
    return buf.getvalue()


def to_json(table: ResultsTable) -> dict[str, Any]:
    return {
        "comparison": [
            {
                "experiment": r.experiment, "method": r.method, "variant": r.variant, "guidance": r.guidance,
                "record": r.record,
                "reported_key": r.reported_key, "num_samples": r.num_samples, "produced": r.produced,
                "reported": r.reported, "delta": {m: r.delta(m) for m in r.produced if r.delta(m) is not None},
                "status": r.status, "protocol": r.protocol, "note": r.note,
            }
            for r in table.comparison
        ],
        "generic": [
            {"experiment": g.experiment, "columns": g.columns,
             "rows": [{**row, "cells": {k: list(v) for k, v in row["cells"].items()}} for row in g.rows]}
            for g in table.generic
        ],
    }


README_INTRO = """\
Results of mixflow-bench beside the numbers the papers report. This file is generated by
`mixflow-bench table --update-committed` (which first copies the runs' records and study write-ups from `runs/`)
from the result records (JSON) under `results/` and from `mixflow_bench/results/reported.yaml`; do not edit it
by hand.

* *protocol*: how the number is measured: sampler-steps (network evaluations per image), guidance (scale, guided
  channels, interval), samples, evaluator; `?` is a value the paper does not state (`unknown` in
  `reported.yaml`, listed under *Note*).
* *method* is what the model was trained with (flow matching `fm`, `mixflow`, `gmflow`, `mixed-source`); *variant*
  is its place in the run: `released` weights, `post-trained` from them, or an equal-length flow-matching
  `control` / `time-law-control`.
* *produced*: the newest result record for the row's (experiment, method, variant, guidance) whose protocol agrees
  with the reported one on every field the paper states; a value computed from fewer than 50K samples carries its
  sample count, e.g. `2.31 (10K)`. A record measured another way is shown in a row of its own (*produced:* before
  its protocol) with the differing fields in *Note*, and no Δ.
* *reported*: the paper's number; `reported.yaml` gives its source and whether it was checked against a
  primary source (numbers from the MixFlow main table, steps study and ablation come from a third-party note).
* *Δ* = produced − reported.
"""


def readme_markdown(table: ResultsTable) -> str:
    return "# Results\n\n" + README_INTRO + "\n" + to_markdown(table)


def write_text_atomic(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file in the same directory."""
    from mixflow_bench.atomic import atomic_write_text

    return atomic_write_text(path, text)
