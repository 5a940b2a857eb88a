"""The training generator lives on the training device; checkpoints say where, and resume continues its stream.

CPU runs are unchanged (the CPU generator draws the same numbers as before). A checkpoint from before the key
``generator_device`` existed is recognised by the size of its state; a CUDA stream cannot continue without CUDA and
says so in one line. The CUDA tests run where a GPU is present.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from mixflow_bench.flow import Path as FlowPath
from mixflow_bench.flow import TimeConvention, mixflow
from mixflow_bench.flow.gmflow.losses import GMFlowObjective
from mixflow_bench.flow.mixed_source import MixedSourceFlow
from mixflow_bench.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from mixflow_bench.train.rng import (
    GeneratorDeviceError,
    capture_rng_state,
    generator_for_resume,
    saved_generator_device,
    training_generator,
)

sys.path.insert(0, str(Path(__file__).parent))
from test_train_resume import KILL_AT, _assert_same_run, _run  # noqa: E402

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_state_records_the_generator_device_and_old_states_are_read_by_size() -> None:
    state = capture_rng_state(training_generator("cpu", 3))
    assert state["generator_device"] == "cpu"
    del state["generator_device"]  # a checkpoint written before the key existed
    assert saved_generator_device(state) == "cpu"
    assert saved_generator_device({"generator": torch.zeros(16, dtype=torch.uint8)}) == "cuda"


def test_cpu_generator_draws_what_a_plain_generator_draws() -> None:
    objective = mixflow(FlowPath("linear", TimeConvention.DATA_AT_1), gamma=0.8)
    a = objective.draw(5, (2, 3), training_generator(torch.device("cpu"), 11))
    b = objective.draw(5, (2, 3), torch.Generator().manual_seed(11))
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].device.type == "cpu"
        assert torch.equal(a[name], b[name]), name


def test_checkpoint_without_the_device_key_resumes_bit_identical(tmp_path: Path) -> None:
    _run(tmp_path / "ref", None)
    _run(tmp_path / "cut", None, stop_after=KILL_AT)
    path = latest_checkpoint(tmp_path / "cut")
    state = load_checkpoint(path)
    for rng in state["rng"]:
        del rng["generator_device"]
    save_checkpoint(path, state)
    _run(tmp_path / "cut", None)
    _assert_same_run(tmp_path / "ref", tmp_path / "cut")


def test_cuda_noise_without_cuda_is_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _run(tmp_path / "run", None, stop_after=KILL_AT)
    path = latest_checkpoint(tmp_path / "run")
    state = load_checkpoint(path)
    for rng in state["rng"]:  # what a GPU run writes: a Philox seed and offset
        rng["generator"], rng["generator_device"] = torch.zeros(16, dtype=torch.uint8), "cuda"
    save_checkpoint(path, state)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(GeneratorDeviceError, match=r"cannot resume .*drawn on cuda.*resume it on a machine with cuda"):
        _run(tmp_path / "run", None)


def test_generator_for_resume_keeps_a_cpu_stream_on_a_cpu_generator() -> None:
    cpu_state = capture_rng_state(training_generator("cpu", 1))
    g = training_generator("cpu", 2)
    assert generator_for_resume(g, cpu_state, "x") is g


def _objectives() -> dict[str, object]:
    return {
        "mixflow": mixflow(FlowPath("linear", TimeConvention.DATA_AT_1), gamma=0.8),
        "gmflow": GMFlowObjective(),
        "mixed-source": MixedSourceFlow(),
    }


@needs_cuda
@pytest.mark.parametrize("name", ["mixflow", "gmflow", "mixed-source"])
def test_objectives_draw_on_the_cuda_generator(name: str) -> None:
    objective = _objectives()[name]
    a = objective.draw(6, (4, 2, 2), training_generator("cuda", 5))
    b = objective.draw(6, (4, 2, 2), training_generator("cuda", 5))
    for key, value in a.items():
        assert value.device.type == "cuda", key
        assert value.shape[0] == 6
        assert torch.equal(value, b[key])


@needs_cuda
def test_cuda_run_draws_on_the_device_and_resumes_bit_identical(tmp_path: Path) -> None:
    _run(tmp_path / "ref", None, device="cuda")
    _run(tmp_path / "cut", None, stop_after=KILL_AT, device="cuda")
    assert load_checkpoint(latest_checkpoint(tmp_path / "cut"))["rng"][0]["generator_device"] == "cuda"
    _run(tmp_path / "cut", None, device="cuda")
    _assert_same_run(tmp_path / "ref", tmp_path / "cut")


@needs_cuda
def test_cpu_checkpoint_resumed_on_cuda_keeps_drawing_on_the_cpu(tmp_path: Path) -> None:
    """A checkpoint whose noise came from the CPU generator continues that stream: the draws equal a CPU run's."""
    from mixflow_bench.train.rng import restore_rng_state

    cpu = training_generator("cpu", 9)
    cpu.manual_seed(9)
    torch.randn(100, generator=cpu)
    state = capture_rng_state(cpu)
    g = generator_for_resume(training_generator("cuda", 9), state, "x")
    restore_rng_state(state, g)
    assert g.device.type == "cpu"
    assert torch.equal(torch.randn(10, generator=g), torch.randn(10, generator=cpu))
