"""The produced-vs-reported join and its renderings, against hand-written records and a tiny reported file."""

from __future__ import annotations

import csv
import io
import json
import re

import pytest
import yaml
from click.testing import CliRunner

from mixflow_bench.cli.table_cmd import command
from mixflow_bench.results.records import make_record, save_record
from mixflow_bench.results.reported import parse_reported
from mixflow_bench.results.table import build_table, format_count, to_csv, to_json, to_latex, to_markdown

PROV = {"paper": "P", "arxiv": "0000.00000", "where": "Table 1", "setting": "s", "sampler": "euler",
        "source": "primary", "verified": True, "verified_by": "me"}
P_ANY = {"sampler": "unknown", "steps": "unknown", "nfe": "unknown", "num_samples": "unknown", "evaluator": "adm"}
P_CFG = {**P_ANY, "scale": 1.5, "channels": "unknown", "interval": "unknown"}
REPORTED = {
    "schema": "mixflow-bench/reported/v1",
    "entries": [
        {"key": "a-base", "experiment": "exp-a", "method": "fm", "variant": "released", "guidance": "none",
         "metrics": {"fid": 2.06, "is": 270.3}, "provenance": PROV, "protocol": P_ANY},
        {"key": "a-mf", "experiment": "exp-a", "method": "mixflow", "variant": "post-trained", "guidance": "none",
         "metrics": {"fid": 1.50, "precision": 0.82}, "provenance": PROV, "protocol": P_ANY},
        # written before the variant field: a method other than baseline/fm-control/fm-beta was post-trained
        {"key": "b-mf", "experiment": "exp-b", "method": "mixflow", "guidance": "cfg",
         "metrics": {"fid": 1.10}, "provenance": PROV, "protocol": P_CFG},
    ],
}


ADM = {"evaluator": "adm"}


def _records():
    """Records as written before the variant field (method baseline = the released model): still readable."""
    return [
        make_record("eval", {"fid": 9.99}, name="old-a-base", experiment="exp-a", method="baseline",
                    guidance="none", num_samples=50_000, protocol=ADM) | {"created": "2025-01-01T00:00:00+00:00"},
        make_record("eval", {"fid": 2.31, "is": 265.0}, name="a-base", experiment="exp-a", method="baseline",
                    guidance="none", num_samples=10_000, protocol=ADM) | {"created": "2025-02-01T00:00:00+00:00"},
        make_record("eval", {"fid": 1.40, "precision": 0.85}, name="a-mf", experiment="exp-a", method="mixflow",
                    guidance="none", num_samples=50_000, protocol=ADM) | {"created": "2025-02-02T00:00:00+00:00"},
        make_record("study", {"fd_steps8": 0.5, "fd_steps8_std": 0.05, "nll_mean": 2.5, "nll_std": 0.1},
                    name="toy-mixflow", experiment="toy2d-study", method="mixflow", num_samples=2000)
        | {"created": "2025-02-03T00:00:00+00:00"},
        make_record("study", {"fd_steps8": 0.7, "fd_steps8_std": 0.04}, name="toy-baseline",
                    experiment="toy2d-study", method="baseline", num_samples=2000)
        | {"created": "2025-02-03T00:00:01+00:00"},
    ]


def _table(**kw):
    return build_table(_records(), parse_reported(REPORTED), **kw)


def test_join_takes_newest_record_and_computes_delta():
    t = _table()
    rows = {(r.experiment, r.method): r for r in t.comparison}
    a = rows[("exp-a", "fm")]
    assert a.variant == "released" and rows[("exp-a", "mixflow")].variant == "post-trained"
    assert a.produced == {"fid": 2.31, "is": 265.0} and a.num_samples == 10_000
    assert a.delta("fid") == pytest.approx(0.25) and a.delta("is") == pytest.approx(-5.3)
    m = rows[("exp-a", "mixflow")]
    assert m.delta("fid") == pytest.approx(-0.10) and m.delta("precision") == pytest.approx(0.03)
    b = rows[("exp-b", "mixflow")]
    assert b.produced == {} and b.delta("fid") is None
    assert [r.experiment for r in _table(include_unproduced=False).comparison] == ["exp-a", "exp-a"]
    assert len(t.generic) == 1 and {r["name"] for r in t.generic[0].rows} == {"toy-mixflow", "toy-baseline"}
    assert t.generic[0].rows[0]["cells"]["nll"] == (2.5, 0.1)


def test_sample_count_formatting():
    assert [format_count(n) for n in (10_000, 1500, 500, 2000)] == ["10K", "1.5K", "500", "2K"]


def _floats(text: str) -> list[float]:
    return [float(x) for x in re.findall(r"[+-]?\d+\.\d+", text)]


def test_markdown_parses_back():
    md = to_markdown(_table())
    lines = [ln for ln in md.splitlines() if ln.startswith("| exp-a | fm | released")]
    cells = [c.strip() for c in lines[0].strip("|").split("|")]
    header = [c.strip() for c in md.splitlines()[2].strip("|").split("|")]
    row = dict(zip(header, cells))
    assert row["FID produced"] == "2.31 (10K)" and float(row["FID reported"]) == 2.06
    assert float(row["FID Δ"]) == pytest.approx(0.25)
    assert float(row["IS Δ"]) == pytest.approx(-5.3)
    mf = [ln for ln in md.splitlines() if ln.startswith("| exp-a | mixflow | post-trained")][0]
    assert "(50K)" not in mf and "1.40" in mf  # full evaluations are not marked
    assert "0.5 ± 0.05" in md


def test_csv_parses_back():
    rows = list(csv.DictReader(io.StringIO(to_csv(_table()))))
    got = {(r["experiment"], r["method"], r["metric"]): r for r in rows}
    r = got[("exp-a", "fm", "fid")]
    assert r["variant"] == "released"
    assert float(r["produced"]) == 2.31 and float(r["reported"]) == 2.06 and int(r["num_samples"]) == 10_000
    assert float(r["delta"]) == pytest.approx(0.25)
    assert float(got[("exp-a", "mixflow", "precision")]["delta"]) == pytest.approx(0.03)
    s = got[("toy2d-study", "mixflow", "fd_steps8")]
    assert (float(s["produced"]), float(s["produced_std"])) == (0.5, 0.05)
    assert got[("exp-b", "mixflow", "fid")]["produced"] == ""


def test_latex_booktabs_and_numbers():
    tex = to_latex(_table())
    assert tex.count(r"\toprule") == 2 and tex.count(r"\midrule") == 2 and tex.count(r"\bottomrule") == 2
    row = [ln for ln in tex.splitlines() if ln.startswith("exp-a & fm & released")][0]
    cells = [c.strip() for c in row.removesuffix(r"\\").split("&")]
    assert cells[5] == "2.31 (10K)" and float(cells[6]) == 2.06 and float(cells[7]) == pytest.approx(0.25)
    assert "fd\\_steps8" in tex


def test_json_roundtrip():
    data = json.loads(json.dumps(to_json(_table())))
    a = [r for r in data["comparison"] if r["record"] == "a-base"][0]
    assert a["delta"]["fid"] == pytest.approx(0.25)


def test_cli_writes_all_formats_and_readme(tmp_path):
    results = tmp_path / "results"
    for rec in _records():
        save_record(rec, results / "produced")
    rep = tmp_path / "reported.yaml"
    rep.write_text(yaml.safe_dump(REPORTED))
    out = CliRunner().invoke(command, ["--results", str(results), "--reported", str(rep), "--markdown",
                                       "--csv", str(tmp_path / "t.csv"), "--latex", str(tmp_path / "t.tex"),
                                       "--json", str(tmp_path / "t.json")])
    assert out.exit_code == 0, out.output
    readme = (results / "README.md").read_text()
    assert "2.31 (10K)" in readme and "toy2d-study" in readme
    assert _floats((tmp_path / "t.tex").read_text())
    assert json.loads((tmp_path / "t.json").read_text())["comparison"]

    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**REPORTED, "entries": [{**REPORTED["entries"][0], "method": "x"}]}))
    out = CliRunner().invoke(command, ["--results", str(results), "--reported", str(bad)])
    assert out.exit_code != 0 and "entry a-base" in out.output
