"""Two torchrun processes produce the same bytes as one process."""

from __future__ import annotations

import dataclasses

import pytest

from mixflow_bench.launch import Task, get_launcher
from mixflow_bench.recipes.loader import load_recipe


@pytest.mark.timeout(240)
def test_two_ranks_equal_one_rank(tmp_path):
    recipe = load_recipe("tiny-digits", None)
    model = dataclasses.asdict(recipe.model)
    sample = {**dataclasses.asdict(recipe.sample), "num": 40, "shard_size": 6, "batch_size": 4, "sampler": "sde",
              "steps": 10}  # fmt: skip
    outs = {}
    for nproc in (1, 2):
        out = tmp_path / f"n{nproc}.npz"
        task = Task("sample", {"model": model, "sample": sample, "out": str(out), "progress": False})
        get_launcher("torchrun", run_dir=tmp_path / f"run{nproc}", nproc=nproc).run(task)
        outs[nproc] = out.read_bytes()
    assert outs[1] == outs[2]
    assert len(list((tmp_path / "n2.npz.shards").glob("shard-*.npz"))) == 7


def test_unknown_launcher_and_task_are_refused():
    with pytest.raises(ValueError, match="unknown launcher"):
        get_launcher("mpi")
    with pytest.raises(ValueError, match="unknown task kind"):
        Task("paint")
