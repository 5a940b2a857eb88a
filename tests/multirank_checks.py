"""Checks shared by the multi-rank launch tests (2 Slurm tasks, 2 torchrun ranks): ``reproduce tiny-digits``
post-training the toy model from a fixed checkpoint on 2 ranks gives

- sample npz files byte-identical to 1 rank sampling the same weights (the init checkpoint, and the
  post-trained EMA weights the 2-rank run wrote), and
- the loss curve of 1 rank training from the same checkpoint, within :data:`LOSS_RTOL`: 2 ranks reduce the loss
  and gradients of the global batch as an all-reduce of two half-batch means (another summation order in
  float32), which is the only difference.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

TRAIN_STEPS = 20
LOSS_RTOL = 1e-5  # relative; measured: up to 1.8e-7 on Slurm (float32 reduction order)
PARAM_ATOL = 1e-5  # EMA weights after TRAIN_STEPS steps, absolute; measured: 1.2e-7 (weights up to 3)
CLI_OVERRIDES = (
    "train.init=checkpoint", f"train.steps={TRAIN_STEPS}", "train.checkpoint_every=5",
    "sample.num=24", "sample.steps=4", "sample.shard_size=6", "sample.batch_size=3",
)  # fmt: skip


def write_init_checkpoint(path: Path) -> Path:
    """A seeded toy-MLP state dict for tiny-digits (the post-training starts from it)."""
    from mixflow_bench.recipes.loader import load_recipe
    from mixflow_bench.sampling.models import toy_spec

    recipe = load_recipe("tiny-digits", None)
    torch.manual_seed(1234)
    model = toy_spec(recipe.model.name, **recipe.model.overrides).build()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return path


def cli_overrides(init: Path) -> list[str]:
    return [*CLI_OVERRIDES, f"model.checkpoint={init}"]


def overrides(init: Path) -> dict:
    """The overrides dict the CLI makes of :func:`cli_overrides` (so that tasks are the same work)."""
    from mixflow_bench.recipes.loader import parse_overrides

    return parse_overrides(cli_overrides(init))


def _losses(log: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in map(json.loads, log.read_text().splitlines())}


def check_against_one_rank(run: Path, init: Path, work: Path) -> float:
    """Assert the 2-rank run ``run`` equals 1 rank (see the module docstring); returns the largest relative
    loss difference seen."""
    from mixflow_bench.pipeline.tasks import sample_task, train_task
    from mixflow_bench.recipes.loader import load_recipe

    ov = overrides(init)
    recipe = load_recipe("tiny-digits", ov)
    sample = dataclasses.asdict(recipe.sample)
    model = dataclasses.asdict(recipe.model)
    for variant, weights in (("baseline", init), ("mixflow", run / "train" / "model.pt")):
        ref = work / f"one-rank-{variant}.npz"
        sample_task({**model, "checkpoint": str(weights)}, sample, str(ref), progress=False)
        assert (run / "samples" / f"{variant}.npz").read_bytes() == ref.read_bytes(), variant
        assert len(list((run / "samples" / f"{variant}.npz.shards").glob("shard-*.npz"))) == 4

    train_task("tiny-digits", ov, str(work / "one-rank-train"))
    one, two = _losses(work / "one-rank-train" / "log.jsonl"), _losses(run / "train" / "log.jsonl")
    assert sorted(two) == sorted(one) == list(range(5, TRAIN_STEPS + 1, 5))  # each step logged once
    worst = max(abs(two[s] - one[s]) / abs(one[s]) for s in one)
    assert worst <= LOSS_RTOL, (one, two)
    a = torch.load(work / "one-rank-train" / "model.pt", weights_only=True)
    b = torch.load(run / "train" / "model.pt", weights_only=True)
    for name, tensor in a.items():
        torch.testing.assert_close(b[name], tensor, rtol=0, atol=PARAM_ATOL, msg=name)
    start = torch.load(init, weights_only=True)
    assert any(not torch.equal(a[name], start[name]) for name in a)  # training moved the weights
    return worst
