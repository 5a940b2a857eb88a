"""Switches of the fast sampling path; the exact fp32 path stays the reference they are measured against.

Each switch is independent: ``precision`` (fp32 / tf32 / bf16 autocast), ``attention`` (fused SDPA or the
explicit softmax of the official samplers), ``compile`` (``torch.compile``; ``compile_mode="reduce-overhead"``
also captures CUDA graphs of each model call). The guidance batching (conditional and null halves in one batch,
autoguidance without the unused null half) and the sync-free sampler loop are always on: they change no number.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class FastPath:
    precision: str = "bf16"  # fp32 | tf32 | bf16
    attention: str = "sdpa"  # sdpa | math
    compile: bool = True
    compile_mode: str = "default"  # default | reduce-overhead (CUDA graphs) | max-autotune-no-cudagraphs

    @classmethod
    def reference(cls) -> FastPath:
        """The exact path: fp32 with TF32 matmuls as the official samplers run, eager, fused attention."""
        return cls(precision="tf32", attention="sdpa", compile=False)


def prepare_model(model: nn.Module, fast: FastPath) -> nn.Module:
    """Set the attention kernel and compile ``model`` for sampling as ``fast`` says (eval mode, no grad)."""
    model = model.eval().requires_grad_(False)
    if hasattr(model, "set_attention"):
        model.set_attention(fast.attention)
    if fast.compile:
        model = torch.compile(model, mode=None if fast.compile_mode == "default" else fast.compile_mode)
    return model
