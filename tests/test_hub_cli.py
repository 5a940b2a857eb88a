"""`mixflow-bench download` through click's CliRunner, against a local HTTP server."""

from __future__ import annotations

import hashlib
import json
import re
import types
from pathlib import Path

import pytest
from click.testing import CliRunner

import mixflow_bench.recipes
from mixflow_bench.cli import download_cmd
from mixflow_bench.cli.common import console
from mixflow_bench.cli.main import cli
from mixflow_bench.hub.testserver import FaultyServer, ServedFile

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("MIXFLOW_BENCH_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(console, "width", 220)
    files = {"sit-xl-2-256": b"s" * 3_000, "adm-ref-imagenet256": b"r" * 12_345}
    with FaultyServer() as server:
        overrides = {}
        for name, data in files.items():
            server.files[f"/{name}"] = ServedFile(data)
            sha = hashlib.sha256(data).hexdigest()
            overrides[name] = {"urls": [server.url(f"/{name}")], "sha256": sha, "check": "none"}
        (tmp_path / "o.json").write_text(json.dumps(overrides))
        monkeypatch.setenv("MIXFLOW_BENCH_REGISTRY_OVERRIDES", str(tmp_path / "o.json"))
        yield server, files


def rows(output: str) -> dict[str, str]:
    """Table rows keyed by their first cell."""
    found = {}
    for line in output.splitlines():
        cells = [c.strip() for c in re.split(r"[│┃|]", line) if c.strip()]
        if cells:
            found[cells[0]] = " ".join(cells[1:])
    return found


def test_list_shows_every_artifact_with_state(served):
    runner = CliRunner()
    result = runner.invoke(cli, ["download", "sit-xl-2-256", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "verified" in rows(result.output)["sit-xl-2-256"]
    result = runner.invoke(cli, ["download", "--list"])
    assert result.exit_code == 0, result.output
    table = rows(result.output)
    from mixflow_bench.hub import artifact_names

    for name in artifact_names():
        assert name in table, name
    assert table["sit-xl-2-256"].split()[:4] == ["checkpoint", "verified", "3.00", "kB"]
    assert table["adm-ref-imagenet256"].split()[:2] == ["reference-batch", "missing"]
    assert "hf:nyu-visionx/RAE-collections" in table["rae-dith-xl-256"]
    assert "~3.36 GB" in table["rae-dith-xl-256"]  # the computed estimate, shown as approximate


def test_offline_missing_names_the_command(served):
    result = CliRunner().invoke(cli, ["download", "adm-ref-imagenet256", "--offline", "--no-progress"])
    assert result.exit_code == 1
    assert "mixflow-bench download adm-ref-imagenet256" in result.output


def test_unknown_name_is_a_user_error_and_an_empty_call_a_usage_error(served):
    result = CliRunner().invoke(cli, ["download", "sit-xl-2-257"])
    assert result.exit_code == 1 and "unknown artifact 'sit-xl-2-257'; did you mean sit-xl-2-256" in result.output
    assert CliRunner().invoke(cli, ["download"]).exit_code == 2


def test_recipe_resolves_through_load_recipe(served, monkeypatch):
    server, files = served

    def load_recipe(name: str):
        assert name == "sit-256"
        body = {"model": {"ckpt": "sit-xl-2-256"}, "eval": {"ref": "adm-ref-imagenet256"}}
        return types.SimpleNamespace(to_dict=lambda: body)

    monkeypatch.setattr(mixflow_bench.recipes, "load_recipe", load_recipe, raising=False)
    result = CliRunner().invoke(cli, ["download", "--recipe", "sit-256", "--no-progress"])
    assert result.exit_code == 0, result.output
    for name, data in files.items():
        path = Path(rows(result.output)[name].split()[-1])
        assert path.read_bytes() == data


def test_recipe_without_loader_is_a_clear_error(served, monkeypatch):
    monkeypatch.delattr(mixflow_bench.recipes, "load_recipe", raising=False)
    result = CliRunner().invoke(cli, ["download", "--recipe", "x"])
    assert result.exit_code == 1 and "load_recipe" in result.output


def test_human_sizes():
    assert download_cmd._human(999) == "999 B"
    assert download_cmd._human(2_700_518_528) == "2.70 GB"
