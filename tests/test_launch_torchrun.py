"""Two torchrun processes produce the same bytes (and, training, the same losses) as one process."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest

from mixflow_bench.launch import Task, get_launcher
from mixflow_bench.recipes.loader import load_recipe

sys.path.insert(0, str(Path(__file__).parent))
from multirank_checks import check_against_one_rank, cli_overrides, write_init_checkpoint  # noqa: E402


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


@pytest.mark.slow  # three torchrun launches of two processes each: ~45 CPU-seconds
@pytest.mark.timeout(480)
def test_reproduce_on_two_torchrun_ranks_equals_one_rank(tmp_path):
    """``reproduce --launcher torchrun --nproc 2``: training (DDP, gloo) and sampling on 2 ranks, against 1 rank."""
    from click.testing import CliRunner

    from mixflow_bench.cli.reproduce_cmd import command
    from mixflow_bench.train.checkpoint import latest_checkpoint, load_checkpoint

    init = write_init_checkpoint(tmp_path / "init.pt")
    run = tmp_path / "run"
    args = ["tiny-digits", *cli_overrides(init), "--launcher", "torchrun", "--nproc", "2", "--run-dir", str(run)]
    result = CliRunner().invoke(command, args)
    assert result.exit_code == 0, result.output
    assert load_checkpoint(latest_checkpoint(run / "train"))["world_size"] == 2
    check_against_one_rank(run, init, tmp_path)
