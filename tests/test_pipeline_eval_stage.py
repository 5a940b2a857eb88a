"""The pipeline's evaluation task on image samples: the ADM metrics through the metrics registry."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mixflow_bench.metrics import adm as evaluate_module
from mixflow_bench.metrics.inception import load_inception
from mixflow_bench.pipeline.tasks import eval_task


@pytest.fixture
def random_network(monkeypatch):
    """The evaluator's network with random weights (no download); the numbers are not metrics of anything."""
    net = load_inception("random", "cpu")
    monkeypatch.setattr(evaluate_module, "load_inception", lambda weights=None, device="cpu": net)
    return net


def test_eval_task_computes_every_adm_metric(tmp_path, random_network):
    rng = np.random.default_rng(0)
    samples, reference = tmp_path / "s.npz", tmp_path / "r.npz"
    np.savez(samples, arr_0=rng.integers(0, 256, size=(12, 32, 32, 3), dtype=np.uint8))
    np.savez(reference, arr_0=rng.integers(0, 256, size=(12, 32, 32, 3), dtype=np.uint8))
    out = tmp_path / "eval" / "mixflow.json"
    values = eval_task(str(samples), str(reference), ["fid", "sfid", "is", "prec", "rec"], str(out))
    assert {"fid", "sfid", "is", "precision", "recall"} <= set(values)
    assert all(np.isfinite(v) for v in values.values())
    assert json.loads(out.read_text()) == values
    details = json.loads(out.with_suffix(".details.json").read_text())
    assert details["num_samples"] == 12 and details["settings"]["weights"] == "random-init"
