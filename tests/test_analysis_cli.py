"""`mixflow-bench analyze slow-flow` with saved toy checkpoints, and checkpoint loading."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from mixflow_bench.analysis.toy_checkpoints import CheckpointError, load_toy_model
from mixflow_bench.cli.analyze_cmd import command
from mixflow_bench.flow.conventions import TimeConvention
from mixflow_bench.models.toy_mlp import ToyVelocityMLP


def test_checkpoint_roundtrip_with_and_without_kwargs(tmp_path):
    torch.manual_seed(0)
    model = ToyVelocityMLP((8, 8), num_classes=10, hidden=32, depth=2, time_dim=16,
                           convention=TimeConvention.DATA_AT_0)
    torch.nn.init.normal_(model.output[1].weight)
    kwargs = {"data_shape": [8, 8], "num_classes": 10, "hidden": 32, "depth": 2, "time_dim": 16,
              "convention": "data_at_0"}
    torch.save({"model_kwargs": kwargs, "state_dict": model.state_dict()}, tmp_path / "a.pt")
    torch.save(model.state_dict(), tmp_path / "b.pt")
    x, t, y = torch.randn(3, 8, 8), torch.rand(3), torch.tensor([0, 4, 9])
    a = load_toy_model(tmp_path / "a.pt")
    assert a.convention is TimeConvention.DATA_AT_0
    torch.testing.assert_close(a(x, t, y), model(x, t, y))
    b = load_toy_model(tmp_path / "b.pt", data_shape=(8, 8))  # architecture read off the shapes
    torch.testing.assert_close(b(x, t, y), model(x, t, y))
    with pytest.raises(CheckpointError, match="--data-shape"):
        load_toy_model(tmp_path / "b.pt")


def test_cli_zero_velocity_models_never_leave_the_noise(tmp_path):
    """A freshly initialised model has a zero output layer: states stay at x0, so m(t) = 0 for every t."""
    for name, conv in (("z1.pt", "data_at_1"), ("z0.pt", "data_at_0")):
        m = ToyVelocityMLP((2,), hidden=16, depth=1, time_dim=8, convention=TimeConvention(conv))
        torch.save({"model_kwargs": {"data_shape": [2], "hidden": 16, "depth": 1, "time_dim": 8,
                                     "convention": conv}, "state_dict": m.state_dict()}, tmp_path / name)
    out = CliRunner().invoke(command, ["slow-flow", "--dataset", "toy2d", "--checkpoint", f"a={tmp_path / 'z1.pt'}",
                                       "--checkpoint", f"b={tmp_path / 'z0.pt'}", "--velocity-exact",
                                       "--steps", "4", "--num", "40", "--out", str(tmp_path / "out")])
    assert out.exit_code == 0, out.output
    data = json.loads((tmp_path / "out" / "slow_flow.json").read_text())
    assert data["models"]["a"]["t"] == pytest.approx([0, 0.25, 0.5, 0.75, 1.0])
    for label in ("a", "b"):
        assert data["models"][label]["percentiles"]["95"] == [0.0] * 5
    exact = data["models"]["exact"]["percentiles"]["50"]
    assert exact[0] == 0.0 and 0.0 < exact[-1] <= 1.0
    assert (tmp_path / "out" / "slow_flow.png").exists()


def test_cli_errors_are_clear(tmp_path):
    r = CliRunner().invoke(command, ["slow-flow", "--dataset", "digits", "--velocity-exact"])
    assert r.exit_code != 0 and "toy2d only" in r.output
    r = CliRunner().invoke(command, ["slow-flow", "--dataset", "toy2d", "--checkpoint", "nolabel"])
    assert r.exit_code != 0 and "LABEL=PATH" in r.output
    r = CliRunner().invoke(command, ["slow-flow", "--dataset", "toy2d", "--checkpoint", f"a={tmp_path / 'x.pt'}"])
    assert r.exit_code != 0 and "no such checkpoint" in r.output
