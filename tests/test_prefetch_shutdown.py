"""A prefetching batch source stops its thread when iteration ends, so that no rank aborts on exit.

A daemon thread still inside torch when the interpreter shuts down is ended with pthread_exit, which aborts the
process with "terminate called without an active exception" (pytorch/pytorch#38228): a torchrun rank leaving a
training stage while the next batch was being built failed that way.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from mixflow_bench.data.loader import PREFETCH_THREAD, ResumableSampler, _PrefetchingBatches
from mixflow_bench.train.engine import TrainConfig, train

sys.path.insert(0, str(Path(__file__).parent))
from test_train_support import FlowMatchingObjective, make_data, make_model  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


class SlowBatches(_PrefetchingBatches):
    """Batches of the engine tests' toy data, each built through many short torch calls (each one gives the GIL
    up and takes it back), so that the producer is inside torch most of the time."""

    def __init__(self, calls: int = 300) -> None:
        self.x, self.y = make_data(64)
        self.calls, self.prefetch = calls, 2
        self.sampler = ResumableSampler(64, 8, seed=0)

    def _make(self, epoch: int, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.from_numpy(np.asarray(indices))
        g = torch.Generator()
        for _ in range(self.calls):
            g.manual_seed(0)
            torch.randn(len(idx), 3, generator=g)
        return self.x[idx], self.y[idx]


def _prefetchers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == PREFETCH_THREAD and t.is_alive()]


def test_closing_the_iterator_ends_the_producer() -> None:
    it = iter(SlowBatches())
    next(it)
    assert len(_prefetchers()) == 1
    it.close()
    assert _prefetchers() == []


def test_training_ends_the_producer_also_when_it_fails(tmp_path: Path) -> None:
    config = TrainConfig(steps=3, global_batch_size=8, checkpoint_every=3, log_every=1)
    train(make_model(), FlowMatchingObjective(), SlowBatches(), config, tmp_path / "ok", progress=False)
    assert _prefetchers() == []

    class Failing(FlowMatchingObjective):
        def loss(self, model, x1, y, randomness):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom") as caught:
        train(make_model(), Failing(), SlowBatches(), config, tmp_path / "failed", progress=False)
    assert caught.tb is not None  # the traceback (kept, as by an error report) holds the training frame...
    assert _prefetchers() == []  # ...but not a running producer


@pytest.mark.timeout(120)
def test_process_leaving_right_after_its_last_batch_exits_cleanly() -> None:
    script = textwrap.dedent(
        """
        import sys
        sys.path.insert(0, sys.argv[1])
        from test_prefetch_shutdown import SlowBatches

        it = iter(SlowBatches(calls=2000))  # slow enough to be mid-batch when the interpreter shuts down
        for _ in range(3):
            next(it)
        del it
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    for _ in range(2):
        proc = subprocess.run([sys.executable, "-c", script, str(Path(__file__).parent)], env=env,
                              capture_output=True, text=True, timeout=100)  # fmt: skip
        assert proc.returncode == 0 and "terminate called" not in proc.stderr, proc.stderr[-2000:]
