"""Files the commands write get the permissions the umask allows (a group-shared folder works with umask 002), and
every cache lives under MIXFLOW_BENCH_HOME."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from mixflow_bench.cli.main import cli
from mixflow_bench.results.records import make_record, save_record


@pytest.fixture(params=[0o002, 0o022], ids=["umask002", "umask022"])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _images(folder: Path, count: int = 3, size: int = 8) -> Path:
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


def test_pack_reference_and_records_follow_the_umask(tmp_path, umask):
    expected = 0o666 & ~umask
    images = _images(tmp_path / "images")
    runner = CliRunner()
    result = runner.invoke(cli, ["pack", str(images), str(tmp_path / "samples.npz")])
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli, ["data", "prepare", "--reference", "--source", str(images), "--resolution", "8",
                                 "--out", str(tmp_path / "reference.npz"), "--no-progress"])  # fmt: skip
    assert result.exit_code == 0, result.output
    record = save_record(make_record("eval", {"fid": 1.0}, name="x", protocol={}), tmp_path / "results")
    for path in (tmp_path / "samples.npz", tmp_path / "reference.npz", record):
        assert _mode(path) == expected, f"{path.name}: {oct(_mode(path))}, umask {oct(umask)}"
    assert not [p.name for p in tmp_path.rglob(".*.tmp")]  # no temporary file left behind


def test_reference_statistics_are_cached_under_the_home(tmp_path, monkeypatch):
    from mixflow_bench.metrics.reference import default_cache_dir

    monkeypatch.delenv("MIXFLOW_BENCH_CACHE", raising=False)
    monkeypatch.setenv("MIXFLOW_BENCH_HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / "ref-stats"
    monkeypatch.setenv("MIXFLOW_BENCH_CACHE", str(tmp_path / "stats"))  # the documented override
    assert default_cache_dir() == tmp_path / "stats" / "ref-stats"
