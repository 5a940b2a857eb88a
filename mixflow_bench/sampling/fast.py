"""Switches of the fast sampling path; the exact fp32 path stays the reference they are measured against.

Each switch is independent: ``precision`` (fp32 / tf32 / bf16 autocast / fp8: bf16 autocast with the model's
linears run as FP8 matmuls, :mod:`mixflow_bench.models.float8`), ``attention`` (fused SDPA or the
explicit softmax of the official samplers), ``compile`` (``torch.compile``; ``compile_mode="reduce-overhead"``
also captures CUDA graphs of each model call). The guidance batching (conditional and null halves in one batch,
autoguidance without the unused null half), the sync-free sampler loop, the prefetched SDE noise
(:func:`prefetch_to`) and the asynchronous copy of finished images (``sample_to_npz``) are always on: they change
no number.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from itertools import chain

import torch
from torch import Tensor, nn

from mixflow_bench.models.float8 import MIN_FEATURES, Float8UnsupportedError, convert_to_float8, require_float8
from mixflow_bench.models.rae_dit import pad_swiglu_hidden, swiglu_needs_padding


@dataclass(frozen=True)
class FastPath:
    precision: str = "bf16"  # fp32 | tf32 | bf16 | fp8 (opt-in; CUDA capability >= 8.9)
    attention: str = "sdpa"  # sdpa | math
    compile: bool = True
    compile_mode: str = "default"  # default | reduce-overhead (CUDA graphs) | max-autotune-no-cudagraphs

    @classmethod
    def reference(cls) -> FastPath:
        """The exact path: fp32 with TF32 matmuls as the official samplers run, eager, fused attention."""
        return cls(precision="tf32", attention="sdpa", compile=False)


def prepare_model(model: nn.Module, fast: FastPath) -> nn.Module:
    """Set the attention kernel and compile ``model`` for sampling as ``fast`` says (eval mode, no grad).

    With precision ``fp8`` the model that runs is a copy whose linears are FP8 (:func:`float8_copy`), converted
    before ``torch.compile``; ``model`` itself keeps its float weights. With bf16 or fp8 (not with the exact fp32 /
    tf32 path) the copy that runs also has odd SwiGLU widths zero-padded to a multiple of 16
    (:meth:`~mixflow_bench.models.rae_dit.SwiGLU.pad_hidden`: the same function, aligned matmuls).
    """
    model = model.eval().requires_grad_(False)
    if hasattr(model, "set_attention"):
        model.set_attention(fast.attention)
    if fast.precision == "fp8":
        model = float8_copy(model)
    elif fast.precision == "bf16" and swiglu_needs_padding(model):
        model = copy.deepcopy(model)
        pad_swiglu_hidden(model)
    if fast.compile:
        compiled = torch.compile(model, mode=None if fast.compile_mode == "default" else fast.compile_mode)
        model = OwnedOutputs(compiled) if fast.compile_mode == "reduce-overhead" else compiled
    return model


def float8_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (on its device) with its eligible linears converted to FP8, for inference.

    Raises :class:`Float8UnsupportedError` (one line) on a device without FP8 matmuls, and for a model with no
    linear FP8 can run (such as the toy MLPs and the mixed-source U-Nets, whose layers are small or not
    ``nn.Linear``): its samples would be bf16 ones labelled fp8.
    """
    first = next(chain(model.parameters(), model.buffers()), None)
    require_float8(first.device if first is not None else torch.device("cpu"))
    model = copy.deepcopy(model)
    pad_swiglu_hidden(model)  # odd SwiGLU widths (the DDT heads' 5461) would keep those linears out of FP8
    if convert_to_float8(model) == 0:
        raise Float8UnsupportedError(
            f"precision fp8: {type(model).__name__} has no linear layer FP8 can run (nn.Linear with both sizes "
            f"multiples of 16 and at least {MIN_FEATURES}); use precision bf16"
        )
    return model


class OwnedOutputs(nn.Module):
    """A CUDA-graphed model whose outputs the caller owns.

    A graph replay overwrites the previous replay's output buffers; guidance that combines two model calls
    (autoguidance: main, then guide) would read an overwritten tensor. The copy costs one output-sized memcpy.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, *args, **kwargs) -> Tensor:
        return self.model(*args, **kwargs).clone()


def prefetch_to(device: torch.device, draw: Callable[[int], Tensor] | None) -> Callable[[int], Tensor] | None:
    """``draw(i)`` (CPU tensors, asked for in order i = 0, 1, ...) delivered on ``device`` one step ahead.

    Each call returns step i's tensor and already draws step i + 1 on the host and queues its copy from pinned
    memory, so neither the draw nor a pageable host-to-device copy (which waits for the device) stalls the
    sampler loop. On the CPU it is ``draw`` itself.
    """
    if draw is None or device.type != "cuda":
        return draw
    return OneAhead(lambda i: draw(i).pin_memory().to(device, non_blocking=True))


class OneAhead:
    """Calls ``fetch(i)`` one index ahead: ``self(i)`` returns ``fetch(i)`` and starts ``fetch(i + 1)``.

    An index asked for out of order is fetched directly (nothing is returned twice or for the wrong index).
    """

    def __init__(self, fetch: Callable[[int], Tensor]):
        self.fetch = fetch
        self.ahead: tuple[int, Tensor] | None = None

    def __call__(self, i: int) -> Tensor:
        if self.ahead is not None and self.ahead[0] == i:
            out = self.ahead[1]
        else:
            out = self.fetch(i)
        self.ahead = (i + 1, self.fetch(i + 1))
        return out
