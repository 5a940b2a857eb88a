"""The numbers the papers report (``mixflow_bench/results/reported.yaml``): loading and validation.

Each entry is keyed by ``(experiment, method, variant, guidance)`` for the join with produced result records
(``method``: a registered method, :mod:`mixflow_bench.methods`; ``variant``:
:data:`~mixflow_bench.results.records.VARIANTS`; an entry without a variant is read as the older spelling,
:func:`~mixflow_bench.results.records.method_and_variant`), carries only
the metrics its source gives, the protocol they were measured with (:mod:`mixflow_bench.results.protocol`; what the
source does not state is ``unknown``), and says where the number comes from and whether it was checked against a
primary source.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mixflow_bench.errors import UserError
from mixflow_bench.methods import method_names
from mixflow_bench.results.protocol import check_protocol
from mixflow_bench.results.records import VARIANTS, method_and_variant

SCHEMA = "mixflow-bench/reported/v1"
DEFAULT_REPORTED = Path(__file__).resolve().parent / "reported.yaml"

GUIDANCE = ("none", "cfg", "autoguidance", "probabilistic")
# metric -> (lower bound, upper bound) of a valid value
METRICS: dict[str, tuple[float, float]] = {
    "fid": (0.0, float("inf")),
    "sfid": (0.0, float("inf")),
    "is": (1.0, float("inf")),
    "precision": (0.0, 1.0),
    "recall": (0.0, 1.0),
    "fid_gain": (float("-inf"), float("inf")),
    "saturation": (-1.0, 1.0),  # GMFlow: mean saturation minus that of real data (Sadat et al. 2025)
}
PROVENANCE_REQUIRED = ("paper", "arxiv", "where", "setting", "sampler", "source", "verified")
SOURCES = ("primary", "secondary")


class ReportedError(UserError, ValueError):
    """A reported-numbers file or entry that does not validate; the message names the file and the entry."""


@dataclass(frozen=True)
class ReportedEntry:
    key: str
    experiment: str
    method: str
    variant: str
    guidance: str
    metrics: dict[str, float]
    provenance: dict[str, Any] = field(default_factory=dict)
    protocol: dict[str, Any] = field(default_factory=dict)

    @property
    def join_key(self) -> tuple[str, str, str, str]:
        return (self.experiment, self.method, self.variant, self.guidance)


def _entry(raw: Any, index: int, where: str) -> ReportedEntry:
    name = raw.get("key") if isinstance(raw, dict) and raw.get("key") else f"#{index}"

    def fail(problem: str) -> ReportedError:
        return ReportedError(f"{where}: entry {name}: {problem}")

    if not isinstance(raw, dict):
        raise fail(f"expected a mapping, got {type(raw).__name__}")
    unknown = set(raw) - {"key", "experiment", "method", "variant", "guidance", "metrics", "provenance", "protocol"}
    if unknown:
        raise fail(f"unknown field(s) {sorted(unknown)}")
    for fld in ("key", "experiment", "method", "guidance"):
        if not isinstance(raw.get(fld), str) or not raw[fld]:
            raise fail(f"field {fld!r} must be a non-empty string, got {raw.get(fld)!r}")
    method, variant = method_and_variant(raw)
    if method not in method_names():
        raise fail(f"method {raw['method']!r} is not one of {list(method_names())}")
    if variant not in VARIANTS:
        raise fail(f"variant {variant!r} is not one of {list(VARIANTS)}")
    if raw["guidance"] not in GUIDANCE:
        raise fail(f"guidance {raw['guidance']!r} is not one of {list(GUIDANCE)}")
    metrics = raw.get("metrics")
    if not isinstance(metrics, dict) or not metrics:
        raise fail("metrics must be a non-empty mapping (omit unknown values, do not leave the entry empty)")
    clean: dict[str, float] = {}
    for metric, value in metrics.items():
        if metric not in METRICS:
            raise fail(f"unknown metric {metric!r} (known: {list(METRICS)})")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise fail(f"metric {metric!r} must be a number, got {value!r}")
        lo, hi = METRICS[metric]
        if not lo <= float(value) <= hi:
            raise fail(f"metric {metric!r} = {value} is outside [{lo}, {hi}]")
        clean[metric] = float(value)
    prov = raw.get("provenance")
    if not isinstance(prov, dict):
        raise fail("provenance is missing (every reported number needs its source)")
    missing = [k for k in PROVENANCE_REQUIRED if k not in prov]
    if missing:
        raise fail(f"provenance lacks {missing}")
    if prov["source"] not in SOURCES:
        raise fail(f"provenance.source {prov['source']!r} is not one of {list(SOURCES)}")
    if not isinstance(prov["verified"], bool):
        raise fail(f"provenance.verified must be true or false, got {prov['verified']!r}")
    if prov["verified"] and not prov.get("verified_by"):
        raise fail("provenance.verified is true but verified_by does not say who verified it")
    if prov.get("protocol_source", prov["source"]) not in SOURCES:  # where the protocol comes from, if not `source`
        raise fail(f"provenance.protocol_source {prov['protocol_source']!r} is not one of {list(SOURCES)}")
    protocol, problem = check_protocol(raw.get("protocol"), raw["guidance"])
    if problem:
        raise fail(problem)
    return ReportedEntry(raw["key"], raw["experiment"], method, variant, raw["guidance"], clean, dict(prov), protocol)


def parse_reported(data: Any, where: str = "<reported>") -> list[ReportedEntry]:
    """Validate the parsed YAML of a reported-numbers file."""
    if not isinstance(data, dict):
        raise ReportedError(f"{where}: expected a mapping with 'schema' and 'entries'")
    if data.get("schema") != SCHEMA:
        raise ReportedError(f"{where}: schema is {data.get('schema')!r}, expected {SCHEMA!r}")
    raw_entries = data.get("entries")
    if not isinstance(raw_entries, list):
        raise ReportedError(f"{where}: 'entries' must be a list")
    entries = [_entry(raw, i, where) for i, raw in enumerate(raw_entries)]
    seen_keys: dict[str, int] = {}
    seen_join: dict[tuple[str, str, str, str], str] = {}
    for i, e in enumerate(entries):
        if e.key in seen_keys:
            raise ReportedError(f"{where}: entry {e.key}: duplicate key (also entry #{seen_keys[e.key]})")
        seen_keys[e.key] = i
        if e.join_key in seen_join:
            raise ReportedError(
                f"{where}: entry {e.key}: (experiment, method, variant, guidance) = {e.join_key} is already used by "
                f"entry {seen_join[e.join_key]}"
            )
        seen_join[e.join_key] = e.key
    return entries


def load_reported(path: Path | str | None = None) -> list[ReportedEntry]:
    """Load and validate ``results/reported.yaml`` (or ``path``); raises :class:`ReportedError` naming the entry."""
    path = Path(path) if path is not None else DEFAULT_REPORTED
    if not path.exists():
        raise ReportedError(f"{path}: no such reported-numbers file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ReportedError(f"{path}: not valid YAML: {exc}") from exc
    return parse_reported(data, str(path))
