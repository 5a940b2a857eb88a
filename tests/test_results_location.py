"""Where results go: every run writes under its run folder (runs/<recipe>/), `table` reads them there, and the
results committed to the repository change only through `table --update-committed`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from mixflow_bench.cli.main import cli
from mixflow_bench.results.records import make_record, save_record

REPO = Path(__file__).resolve().parents[1]
# the README's main job (reproduce toy2d digits) and the pipeline's smallest recipe, cut to seconds of CPU
TOY2D_TINY = ["study.baseline_steps=20", "study.posttrain_steps=20", "study.seeds=[0]", "study.num_eval_samples=128",
              "study.eval_steps=[4]", "study.slow_flow_samples=16", "study.gammas=[0.8]", "data.num_train=256",
              "data.num_heldout=128"]  # fmt: skip
TINY_DIGITS = ["train.steps=20", "sample.num=16"]


def _run(args: list[str], cwd: Path, env: dict[str, str]) -> str:
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.mark.skipif(not (REPO / ".git").exists(), reason="needs the repository's git history to clone")
def test_reproduce_in_a_clean_clone_leaves_git_status_empty_and_table_shows_the_runs(tmp_path):
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True, timeout=120)
    env = {**os.environ, "PYTHONPATH": str(clone), "MIXFLOW_BENCH_HOME": str(tmp_path / "home"), "COLUMNS": "200"}
    python = [sys.executable, "-m", "mixflow_bench"]
    _run([*python, "reproduce", "toy2d", *TOY2D_TINY], clone, env)
    _run([*python, "reproduce", "tiny-digits", *TINY_DIGITS], clone, env)
    status = subprocess.run(["git", "status", "--porcelain"], cwd=clone, capture_output=True, text=True, check=True)
    assert status.stdout == "", status.stdout  # nothing tracked changed, nothing new outside the ignored runs/
    table = _run([*python, "table", "--produced-only"], clone, env)
    # toy2d: baseline, both FM controls and one MixFlow gamma; tiny-digits: one record
    assert "5 result record(s) from runs" in " ".join(table.split()), table
    records = sorted(p.relative_to(clone).as_posix() for p in (clone / "runs").rglob("results/*.json"))
    assert records == [
        "runs/tiny-digits/results/tiny-digits-mixflow.json",
        "runs/toy2d/results/study-toy2d-baseline.json",
        "runs/toy2d/results/study-toy2d-fm-beta.json",
        "runs/toy2d/results/study-toy2d-fm-control.json",
        "runs/toy2d/results/study-toy2d-mixflow.json",
    ]


def _study_run(runs: Path, name: str, recipe: dict, files: tuple[str, ...]) -> None:
    run = runs / name
    for file in files:
        (run / file).parent.mkdir(parents=True, exist_ok=True)
        committed = REPO / "results" / "studies" / name / file  # a real write-up where README.md reads one
        (run / file).write_text(committed.read_text() if committed.suffix == ".json" and committed.exists()
                                else f"{name} {file}")  # fmt: skip
    record = make_record("study", {"fd@4": 1.0}, name=f"study-{name}-baseline", experiment=name, method="baseline",
                         guidance="none", recipe=recipe, protocol={})  # fmt: skip
    save_record(record, run / "results")


def test_update_committed_copies_records_and_write_ups_into_results(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "results").mkdir()
    _study_run(tmp_path / "runs", "toy2d", {"name": "toy2d", "study": {"kind": "mixflow"}},
               ("study.json", "fd_vs_steps.png", "slow_flow.json", "seed0/baseline.pt"))  # fmt: skip
    _study_run(tmp_path / "runs", "gmflow-checkerboard", {"name": "gmflow-checkerboard", "study": {"kind": "gmflow"}},
               ("study.json", "table.md", "histograms.png"))  # fmt: skip
    _study_run(tmp_path / "runs", "mixed-source-toy2d", {"name": "mixed-source-toy2d", "mixed_source": {"steps": 1}},
               ("study.json", "quality_vs_nfe.png"))  # fmt: skip
    before = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())

    result = CliRunner().invoke(cli, ["table"])  # reading the runs writes nothing
    assert result.exit_code == 0, result.output
    assert "3 result record(s) from runs" in " ".join(result.output.split())
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()) == before

    result = CliRunner().invoke(cli, ["table", "--update-committed"])
    assert result.exit_code == 0, result.output
    committed = sorted(p.relative_to(tmp_path / "results").as_posix() for p in (tmp_path / "results").rglob("*"))
    assert [p for p in committed if "." in p] == [
        "README.md",
        "gmflow-checkerboard/histograms.png",
        "gmflow-checkerboard/study.json",
        "gmflow-checkerboard/table.md",
        "mixed-source/mixed-source-toy2d/quality_vs_nfe.png",
        "mixed-source/mixed-source-toy2d/study.json",
        "produced/study-gmflow-checkerboard-baseline.json",
        "produced/study-mixed-source-toy2d-baseline.json",
        "produced/study-toy2d-baseline.json",
        "studies/toy2d/fd_vs_steps.png",
        "studies/toy2d/slow_flow.json",
        "studies/toy2d/study.json",
    ]
    results, runs = tmp_path / "results", tmp_path / "runs"
    assert (results / "mixed-source/mixed-source-toy2d/study.json").read_text() == "mixed-source-toy2d study.json"
    assert (results / "studies/toy2d/study.json").read_text() == (runs / "toy2d/study.json").read_text()
    record = json.loads((tmp_path / "results/produced/study-toy2d-baseline.json").read_text())
    assert record == json.loads((tmp_path / "runs/toy2d/results/study-toy2d-baseline.json").read_text())
    assert "### toy2d" in (tmp_path / "results/README.md").read_text()  # the study's write-up, from its study.json


def test_update_committed_needs_the_checkouts_results_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["table", "--update-committed"])
    assert result.exit_code == 1 and "run --update-committed in the checkout" in result.output
    (tmp_path / "results").mkdir()
    result = CliRunner().invoke(cli, ["table", "--update-committed", "--results", "results"])
    assert result.exit_code == 2 and "give the runs' folder" in result.output
