"""Tables read at 80 columns (a pipe, ``| less``, a Slurm log): every number and name shown whole.

The commands run as a user runs them (a subprocess with ``COLUMNS=80``, stdout not a terminal), so rich's width
detection is part of what is tested. Each test would fail on the old layout: rich shrank the metric columns of
``table`` to nothing, cut recipe names with an ellipsis and the integrity column of ``download --list`` to ``inte…``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mixflow_bench.recipes import list_recipes
from mixflow_bench.results.records import make_record, save_record
from mixflow_bench.results.reported import load_reported
from mixflow_bench.results.table import format_value

pytestmark = pytest.mark.timeout(120)


def run_cli(*args: str, tmp_path: Path, columns: int = 80) -> str:
    env = {**os.environ, "COLUMNS": str(columns), "MIXFLOW_BENCH_HOME": str(tmp_path / "home")}
    out = subprocess.run([sys.executable, "-m", "mixflow_bench", *args], capture_output=True, text=True, env=env,
                         cwd=tmp_path, timeout=100)  # fmt: skip
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_table_shows_every_produced_and_reported_fid_at_80_columns(tmp_path):
    entries = [e for e in load_reported() if "fid" in e.metrics][:4]
    for i, e in enumerate(entries):  # produced numbers for real reported rows (any protocol: matched or own row)
        save_record(make_record("eval", {"fid": 10.0 + i + 0.25, "is": 200.0 + i}, name=f"r{i}", num_samples=10_000,
                                experiment=e.experiment, method=e.method, variant=e.variant, guidance=e.guidance,
                                protocol={"evaluator": "adm"}), tmp_path / "results")  # fmt: skip
    text = run_cli("table", "--results", str(tmp_path / "results"), "--json", str(tmp_path / "t.json"),
                   tmp_path=tmp_path)  # fmt: skip
    assert max(len(line) for line in text.splitlines()) <= 80
    rows = json.loads((tmp_path / "t.json").read_text())["comparison"]
    produced = [r for r in rows if "fid" in r["produced"]]
    assert len(produced) >= len(entries)
    for r in rows:  # each FID whole, produced with its sample count
        if "fid" in r["reported"]:
            assert format_value("fid", r["reported"]["fid"]) in text, r
    for i in range(len(entries)):
        assert f"{10.0 + i + 0.25:.2f} (10K)" in text  # the produced FID with its sample count


def test_table_metrics_and_columns_choose_the_terminal_view(tmp_path):
    text = run_cli("table", "--metrics", "fid", "--columns", "experiment,method",
                   "--results", str(tmp_path / "none"), "--csv", str(tmp_path / "t.csv"), tmp_path=tmp_path,
                   columns=200)  # fmt: skip
    assert "FID" in text and "sFID" not in text and "Protocol" not in text
    header = (tmp_path / "t.csv").read_text().splitlines()[0]
    assert "Protocol" in header or "protocol" in header  # files keep every column


def test_recipes_list_prints_whole_names_at_80_columns(tmp_path):
    text = run_cli("recipes", "list", tmp_path=tmp_path)
    assert max(len(line) for line in text.splitlines()) <= 80
    words = set(text.split())
    missing = [name for name in list_recipes() if name not in words]
    assert not missing, missing
    assert "…" not in text
    assert "baseline 1,500 + post-training 1,000 steps" in " ".join(text.split())  # a study's real step counts


def test_download_list_shows_integrity_whole_at_80_columns(tmp_path):
    text = run_cli("download", "--list", tmp_path=tmp_path)
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "…" not in text
    assert "integrity: unverified (first download)" in text


def test_reproduce_plan_shows_each_gpu_estimate_whole_at_80_columns(tmp_path):
    from mixflow_bench.pipeline.reproduce import plan, remaining_gpu_hours

    text = run_cli("reproduce", "gmflow-256", "--plan", "--run-dir", str(tmp_path / "run"), tmp_path=tmp_path)
    assert max(len(line) for line in text.splitlines()) <= 80
    totals, _ = remaining_gpu_hours(plan("gmflow-256", run_dir=tmp_path / "run")[2])
    assert " · ".join(f"{gpu} ~{hours:,.1f}" for gpu, hours in totals.items()) in text
    assert "…" not in text
