"""Checkpoint files: atomic writes, the latest pointer, retention, RNG round trips and EMA export."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mixflow_bench.train.batches import InMemoryBatches
from mixflow_bench.train.checkpoint import (
    checkpoint_dir,
    export_ema,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    prune_checkpoints,
    save_checkpoint,
    write_latest_pointer,
)
from mixflow_bench.train.engine import TrainConfig, train
from mixflow_bench.train.rng import capture_rng_state, restore_rng_state

sys.path.insert(0, str(Path(__file__).parent))
from test_train_support import FlowMatchingObjective, make_data, make_model  # noqa: E402


def _write(out: Path, step: int) -> Path:
    return save_checkpoint(
        checkpoint_dir(out) / f"step-{step:07d}.pt", {"step": step, "w": torch.full((3,), step)}
    )


def test_latest_ignores_partial_and_temporary_files(tmp_path: Path) -> None:
    _write(tmp_path, 2)
    good = _write(tmp_path, 4)
    write_latest_pointer(tmp_path, good)
    directory = checkpoint_dir(tmp_path)
    payload = good.read_bytes()
    (directory / "step-0000006.pt").write_bytes(payload[: len(payload) // 2])  # a torn write
    (directory / ".step-0000008.pt.abc.tmp").write_bytes(payload)  # an unfinished atomic write
    (directory / "step-0000009.pt").write_bytes(b"")
    assert latest_checkpoint(tmp_path) == good
    write_latest_pointer(tmp_path, directory / "step-0000006.pt")  # even a pointer to it is not trusted
    assert latest_checkpoint(tmp_path) == good
    (directory / "latest").unlink()
    assert latest_checkpoint(tmp_path) == good
    with pytest.raises(ValueError, match="truncated"):
        load_checkpoint(directory / "step-0000006.pt")
    assert latest_checkpoint(tmp_path / "nothing") is None


def test_failed_save_keeps_previous_file_and_leaves_no_temp(tmp_path: Path) -> None:
    path = _write(tmp_path, 1)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        save_checkpoint(path, {"step": 2, "bad": Unpicklable()})
    assert load_checkpoint(path)["step"] == 1
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]


def test_prune_keeps_last_k_and_every_nth(tmp_path: Path) -> None:
    for step in range(1, 8):
        _write(tmp_path, step)
    prune_checkpoints(tmp_path, keep_last=2, keep_every=3)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [3, 6, 7]


def test_rng_state_round_trip_through_weights_only_file(tmp_path: Path) -> None:
    generator = torch.Generator().manual_seed(5)
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    (
        random.random(),
        np.random.normal(),
        torch.randn(2, generator=generator),
    )  # mid-stream states, gauss cached
    save_checkpoint(tmp_path / "rng.pt", {"rng": capture_rng_state(generator)})

    def draw() -> tuple:
        return (
            random.random(),
            random.gauss(0, 1),
            np.random.normal(size=3).tolist(),
            torch.rand(3).tolist(),
            torch.rand(3, generator=generator).tolist(),
        )

    first = draw()
    random.seed(9), np.random.seed(9), torch.manual_seed(9), generator.manual_seed(9)
    restore_rng_state(load_checkpoint(tmp_path / "rng.pt")["rng"], generator)
    assert draw() == first


def test_export_ema_loads_strictly_into_the_model(tmp_path: Path) -> None:
    x, y = make_data(16)
    config = TrainConfig(steps=3, global_batch_size=8, lr=1e-2, ema_decay=0.5, checkpoint_every=3)
    train(
        make_model(),
        FlowMatchingObjective(),
        InMemoryBatches(x, y, 8, seed=1),
        config,
        tmp_path,
        progress=False,
        extra={"recipe": {"name": "toy", "gamma": 0.4}},
    )
    state = load_checkpoint(latest_checkpoint(tmp_path))
    assert state["extra"] == {"recipe": {"name": "toy", "gamma": 0.4}} and state["config"]["steps"] == 3
    export_ema(latest_checkpoint(tmp_path), tmp_path / "ema.pt")
    raw = torch.load(tmp_path / "ema.pt", weights_only=True)
    fresh = make_model(seed=9)
    fresh.load_state_dict(raw, strict=True)
    for name, tensor in fresh.state_dict().items():
        assert torch.equal(tensor, state["ema"][name])
    assert not torch.equal(state["ema"]["inp.weight"], state["model"]["inp.weight"])


def test_full_disk_is_said_before_writing(tmp_path, monkeypatch):
    """A checkpoint larger than the free space is refused with sizes and the way out, and nothing is written
    (the GPU rehearsal met torch's bare "unexpected pos" error on a full disk)."""
    import collections

    import pytest

    from mixflow_bench.train import checkpoint as ckpt

    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(ckpt.shutil, "disk_usage", lambda p: usage(10**12, 10**12 - 1000, 1000))
    state = {"model": {"w": torch.zeros(1000)}, "ema": {"w": torch.zeros(1000)}, "step": 3}
    assert ckpt.tensor_bytes(state) == 8000
    with pytest.raises(ckpt.CheckpointSpaceError, match=r"needs about 0\.0 GB but 0\.0 GB are free.*resumes"):
        ckpt.save_checkpoint(tmp_path / "step-0000003.pt", state)
    assert list(tmp_path.iterdir()) == []
