"""Capture and restore every random number generator a training step can touch, and make the training generator.

The *training generator* feeds ``objective.draw`` and lives on the training device: drawing a step's noise for
the global batch on the CPU costs about a second per step at RAE's batch of 1024 x 768 x 16 x 16, on the GPU
a millisecond. Its state is a CPU Mersenne Twister (5,056 bytes) or a CUDA Philox seed and offset (16 bytes);
checkpoints record which (``generator_device``), and a checkpoint written before that key existed is recognised
by the size of its state.

States are stored as tensors, ints and lists only, so a checkpoint holding them loads with
``torch.load(..., weights_only=True)``: numpy's ``uint32`` key becomes an ``int64`` tensor and Python's
Mersenne Twister state a list of ints.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

CPU_GENERATOR_STATE_BYTES = 5056  # torch's mt19937 state; a CUDA Philox state is 16 bytes


class GeneratorDeviceError(ValueError):
    """A checkpoint's training generator ran on a device type this process does not have."""


def training_generator(device: torch.device | str, seed: int) -> torch.Generator:
    """The generator that draws every step's randomness, on the training ``device`` (CPU or CUDA)."""
    return torch.Generator(device=torch.device(device)).manual_seed(seed)


def saved_generator_device(state: dict[str, Any]) -> str:
    """Device type (``"cpu"``/``"cuda"``) of the training generator in a captured state; older states by size."""
    if "generator_device" in state:
        return str(state["generator_device"])
    if "generator" not in state:
        raise KeyError("checkpoint RNG state has no training generator state")
    return "cpu" if state["generator"].numel() == CPU_GENERATOR_STATE_BYTES else "cuda"


def generator_for_resume(generator: torch.Generator, state: dict[str, Any], where: str) -> torch.Generator:
    """The generator that continues the checkpoint's stream: ``generator`` or a new one on the saved device type.

    A run saved with its generator on the CPU (a CPU run, or a checkpoint from before draws moved to the
    device) keeps drawing on the CPU, so that the resumed run stays bit-identical to an uninterrupted one. A
    CUDA generator cannot continue without CUDA: :class:`GeneratorDeviceError` (``where`` names the checkpoint).
    """
    saved = saved_generator_device(state)
    if saved == generator.device.type:
        return generator
    if saved == "cpu":
        return torch.Generator()
    if saved == "cuda" and torch.cuda.is_available():
        return torch.Generator(device="cuda")
    raise GeneratorDeviceError(
        f"cannot resume {where}: its training noise was drawn on {saved}, which this process does not have; "
        f"resume it on a machine with {saved}"
    )


def capture_rng_state(generator: torch.Generator | None = None) -> dict[str, Any]:
    """Python, numpy, torch CPU, every CUDA device (when present) and ``generator`` (when given)."""
    version, internal, gauss_next = random.getstate()
    np_state = np.random.get_state(legacy=False)
    state: dict[str, Any] = {
        "python": {"version": int(version), "state": [int(v) for v in internal], "gauss_next": gauss_next},
        "numpy": {
            "bit_generator": str(np_state["bit_generator"]),
            "key": torch.from_numpy(np.asarray(np_state["state"]["key"], dtype=np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    if generator is not None:
        state["generator"] = generator.get_state()
        state["generator_device"] = generator.device.type
    return state


def restore_rng_state(state: dict[str, Any], generator: torch.Generator | None = None) -> None:
    """Inverse of :func:`capture_rng_state`; CUDA states are restored only when the device count matches."""
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss_next"]))
    npst = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": npst["bit_generator"],
            "state": {"key": npst["key"].numpy().astype(np.uint32), "pos": npst["pos"]},
            "has_gauss": npst["has_gauss"],
            "gauss": npst["gauss"],
        }
    )
    torch.set_rng_state(state["torch"])
    cuda_states = state.get("cuda") or []
    if cuda_states and torch.cuda.is_available() and len(cuda_states) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda_states)
    if generator is not None:
        if "generator" not in state:
            raise KeyError("checkpoint RNG state has no training generator state")
        generator.set_state(state["generator"])
