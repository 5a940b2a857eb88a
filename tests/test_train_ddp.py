"""DDP through torchrun: 2 gloo ranks on half batches reach the weights of 1 process on the whole batch.

Run by torchrun as a script (``tests/test_train_ddp.py OUT [STOP]``): each rank reads its slice of each batch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from mixflow_bench.train.batches import InMemoryBatches
from mixflow_bench.train.checkpoint import latest_checkpoint, load_checkpoint
from mixflow_bench.train.engine import TrainConfig, train

sys.path.insert(0, str(Path(__file__).parent))
from test_train_support import FlowMatchingObjective, make_data, make_model  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CONFIG = TrainConfig(
    steps=6,
    global_batch_size=8,
    lr=1e-2,
    weight_decay=0.01,
    ema_decay=0.7,
    grad_clip=0.5,
    checkpoint_every=3,
    log_every=1,
    seed=11,
)


def _run(out: Path, rank: int, world_size: int, stop_after: int | None = None) -> None:
    x, y = make_data(32)
    batches = InMemoryBatches(x, y, CONFIG.global_batch_size, seed=5, rank=rank, world_size=world_size)
    train(make_model(), FlowMatchingObjective(), batches, CONFIG, out, progress=False, stop_after=stop_after)


def _torchrun(out: Path, *extra: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        __file__,
        str(out),
        *extra,
    ]
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def test_two_gloo_ranks_equal_one_process(tmp_path: Path) -> None:
    # The 2-rank run stops after 4 steps (checkpoint at 3) and is resumed by a second torchrun job.
    _torchrun(tmp_path / "ddp", "4")
    _torchrun(tmp_path / "ddp")
    _run(tmp_path / "single", rank=0, world_size=1)
    a = load_checkpoint(latest_checkpoint(tmp_path / "single"))
    b = load_checkpoint(latest_checkpoint(tmp_path / "ddp"))
    assert a["step"] == b["step"] == CONFIG.steps and b["world_size"] == 2
    for part in ("model", "ema"):
        for name, tensor in a[part].items():
            torch.testing.assert_close(b[part][name], tensor, rtol=1e-6, atol=1e-7, msg=f"{part}.{name}")
    # The parameters moved, so the comparison is not trivially between initial weights.
    assert not torch.allclose(a["model"]["inp.weight"], make_model().state_dict()["inp.weight"])
    la = [json.loads(s) for s in (tmp_path / "single" / "log.jsonl").read_text().splitlines()]
    lb = [json.loads(s) for s in (tmp_path / "ddp" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lb] == list(range(1, CONFIG.steps + 1))
    for ra, rb in zip(la, lb):
        assert abs(ra["loss"] - rb["loss"]) <= 1e-6 * abs(ra["loss"])
        assert abs(ra["grad_norm"] - rb["grad_norm"]) <= 1e-6 * abs(ra["grad_norm"])


if __name__ == "__main__":
    torch.set_num_threads(1)
    stop = int(sys.argv[2]) if len(sys.argv) > 2 else None
    _run(Path(sys.argv[1]), int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), stop_after=stop)
