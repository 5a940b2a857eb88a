"""Exponential moving average of a model's weights: ``ema = decay * ema + (1 - decay) * param``.

Buffers (e.g. fixed positional embeddings, RoPE tables) are copied, not averaged.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def create_ema(model: nn.Module) -> nn.Module:
    """A frozen deep copy of ``model`` (eval mode, no gradients) to hold the moving average."""
    ema = copy.deepcopy(model)
    ema.eval()
    ema.requires_grad_(False)
    return ema


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """One EMA step in place: every parameter ``e <- decay * e + (1 - decay) * p``; buffers copied.

    ``ema`` and ``model`` must have the same parameter and buffer names (an unwrapped model, not DDP).
    """
    if not 0.0 <= decay <= 1.0:
        raise ValueError(f"EMA decay must lie in [0, 1], got {decay}")
    ema_params = dict(ema.named_parameters())
    model_params = dict(model.named_parameters())
    if ema_params.keys() != model_params.keys():
        missing = sorted(set(model_params) ^ set(ema_params))[:5]
        raise ValueError(f"EMA and model parameters differ, e.g. {missing}")
    targets = [ema_params[name] for name in model_params]
    sources = [param.detach().to(target.dtype) for param, target in zip(model_params.values(), targets)]
    # one fused kernel per op over all tensors (SiT-XL has ~300); same arithmetic as mul_ then add_
    torch._foreach_mul_(targets, decay)
    torch._foreach_add_(targets, sources, alpha=1.0 - decay)
    ema_buffers = dict(ema.named_buffers())
    for name, buffer in model.named_buffers():
        ema_buffers[name].copy_(buffer)
