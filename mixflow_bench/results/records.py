"""Produced results as JSON records: one file per evaluation, with the settings, versions and hardware behind it.

A record is a plain dict with ``schema = "mixflow-bench/result/v1"``, written into its run's ``results/`` folder
(:mod:`mixflow_bench.runs`). ``mixflow-bench table`` reads every record under ``runs/`` (or another folder) and
sets it beside the reported numbers.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import re
from pathlib import Path
from typing import Any

from mixflow_bench.atomic import atomic_write_text
from mixflow_bench.runs import RUNS, records_dir, run_dir

SCHEMA = "mixflow-bench/result/v1"
# what a record's model is within its run: the released weights, trained from scratch, post-trained from the released
# weights, or one of the equal-length controls (flow matching with the base model's time law / the post-training's)
VARIANTS = ("released", "trained", "post-trained", "control", "time-law-control")
# records (and reported entries) written before the variant field named the variant in ``method``
LEGACY_METHODS = {"baseline": "released", "fm-control": "control", "fm-beta": "time-law-control"}
# records of evaluations that belong to no run (``mixflow-bench eval`` without --results-dir)
STANDALONE_RESULTS_DIR = records_dir(run_dir("eval"))


def environment_info() -> dict[str, Any]:
    """Versions and hardware of this process: python, torch, CUDA, GPU names, CPU count, host."""
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
    }
    import torch

    info["torch"] = torch.__version__
    info["cuda"] = torch.version.cuda
    if torch.cuda.is_available():
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    from mixflow_bench import __version__

    info["mixflow_bench"] = __version__
    return info


def make_record(
    kind: str,
    metrics: dict[str, float],
    *,
    name: str,
    num_samples: int | None = None,
    experiment: str | None = None,
    method: str | None = None,
    variant: str | None = None,
    guidance: str | None = None,
    recipe: dict[str, Any] | None = None,
    protocol: dict[str, Any] | None = None,
    **context: Any,
) -> dict[str, Any]:
    """A result record. ``experiment`` + ``method`` (a registered method) + ``variant`` (:data:`VARIANTS`) +
    ``guidance`` key it against ``results/reported.yaml``, and
    ``protocol`` (:func:`mixflow_bench.results.protocol.protocol_of`; derived from ``recipe`` when not given) says
    how the number was measured, so that ``table`` compares it only with a number measured the same way."""
    if protocol is None and recipe is not None:
        from mixflow_bench.results.protocol import record_protocol

        protocol = record_protocol({"recipe": recipe})
    return {
        "schema": SCHEMA,
        "kind": kind,
        "name": name,
        "experiment": experiment,
        "method": method,
        "variant": variant,
        "guidance": guidance,
        "metrics": {k: float(v) for k, v in metrics.items()},
        "num_samples": num_samples,
        "protocol": protocol,
        "recipe": recipe,
        "environment": environment_info(),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        **context,
    }


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "result"


def write_json_atomic(path: Path, data: Any) -> Path:
    """Write ``data`` as indented JSON to ``path`` through a temporary file in the same directory."""
    text = json.dumps(data, indent=2, sort_keys=False, default=str) + "\n"
    return atomic_write_text(path, text)


def save_record(record: dict[str, Any], results_dir: Path | None = None) -> Path:
    """Write ``record`` to ``results_dir/<name>.json`` (atomic; default :data:`STANDALONE_RESULTS_DIR`) and return
    the path."""
    if record.get("schema") != SCHEMA:
        raise ValueError(f"not a result record (schema {record.get('schema')!r}, expected {SCHEMA!r})")
    results_dir = Path(results_dir) if results_dir is not None else STANDALONE_RESULTS_DIR
    return write_json_atomic(results_dir / f"{_slug(record['name'])}.json", record)


def load_records(results_dir: Path | None = None) -> list[dict[str, Any]]:
    """Every result record below ``results_dir`` (recursively; default: every run's, under ``runs/``), oldest first;
    other JSON files are ignored."""
    results_dir = Path(results_dir) if results_dir is not None else RUNS
    records = []
    for path in sorted(results_dir.rglob("*.json")) if results_dir.exists() else []:
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(data, dict) and data.get("schema") == SCHEMA:
            data.setdefault("path", str(path))
            records.append(data)
    return sorted(records, key=lambda r: r.get("created") or "")


def method_and_variant(entry: dict[str, Any]) -> tuple[str, str]:
    """(method, variant) of a result record or a reported entry (a mapping).

    Entries written before the ``variant`` field named the pipeline variant in ``method`` (:data:`LEGACY_METHODS`):
    ``baseline`` is the released model, whose method is its zoo entry's (flow matching for a model outside the zoo);
    the controls are flow matching; any other method was post-trained. Study records name their own rows and keep
    an empty variant.
    """
    method, variant = str(entry.get("method") or ""), entry.get("variant")
    if variant or entry.get("kind") == "study":  # a study's rows are its own (baseline, FM, MixFlow gamma ...)
        return method, str(variant or "")
    if method == "baseline":
        return _released_method(entry), "released"
    if method in LEGACY_METHODS:
        return "fm", LEGACY_METHODS[method]
    return method, "post-trained"


def _released_method(entry: dict[str, Any]) -> str:
    """The method of a legacy baseline's model (its recipe's zoo entry), flow matching when unknown."""
    recipe = entry.get("recipe")
    name = (recipe.get("model") or {}).get("name") if isinstance(recipe, dict) else None
    from mixflow_bench.models.zoo import ZOO

    spec = ZOO.get(name) if isinstance(name, str) else None
    return spec.method if spec is not None else "fm"
