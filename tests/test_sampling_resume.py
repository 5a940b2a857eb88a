"""A sampling run SIGKILLed mid-way and started again gives the bytes of an uninterrupted run."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from mixflow_bench.pipeline.tasks import sample_task
from mixflow_bench.recipes.loader import load_recipe

REPO = Path(__file__).resolve().parents[1]
OVERRIDES = ["sample.num=96", "sample.shard_size=8", "sample.batch_size=4", "sample.sampler=sde", "sample.steps=120"]


def _cli(out: Path) -> list[str]:
    return [sys.executable, "-m", "mixflow_bench", "sample", "tiny-digits", *OVERRIDES, "--out", str(out)]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


@pytest.mark.timeout(180)
def test_sigkill_then_resume_is_byte_identical(tmp_path):
    out = tmp_path / "killed.npz"
    shards = tmp_path / "killed.npz.shards"
    proc = subprocess.Popen(_cli(out), cwd=REPO, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while len(list(shards.glob("shard-*.npz"))) < 2:
        assert proc.poll() is None, "sampling ended before it could be interrupted"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = sorted(p.name for p in shards.glob("shard-*.npz"))
    assert not out.exists() and 2 <= len(done_before) < 12
    mtimes = {p.name: p.stat().st_mtime_ns for p in shards.glob("shard-*.npz")}

    subprocess.run(_cli(out), cwd=REPO, env=_env(), check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # finished shards were kept, not redone
    assert all((shards / name).stat().st_mtime_ns == mtimes[name] for name in done_before)

    recipe = load_recipe("tiny-digits", None)
    sample = dataclasses.asdict(recipe.sample)
    sample.update(num=96, shard_size=96, batch_size=96, sampler="sde", steps=120)  # one batch, one shard
    ref = tmp_path / "reference.npz"
    sample_task(dataclasses.asdict(recipe.model), sample, str(ref), progress=False)
    assert out.read_bytes() == ref.read_bytes()
    assert np.load(out)["arr_0"].shape == (96, 8, 8, 3)


def test_other_settings_in_shard_dir_are_refused(tmp_path):
    recipe = load_recipe("tiny-digits", None)
    sample = {**dataclasses.asdict(recipe.sample), "num": 8, "shard_size": 4, "steps": 2}
    out = tmp_path / "s.npz"
    sample_task(dataclasses.asdict(recipe.model), sample, str(out), progress=False)
    before = out.read_bytes()
    with pytest.raises(ValueError, match="other settings"):
        sample_task(dataclasses.asdict(recipe.model), {**sample, "seed": 1}, str(out), progress=False)
    assert out.read_bytes() == before
