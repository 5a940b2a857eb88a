"""A small single-process trainer for the toy recipes (CPU, seconds), resumable from its last checkpoint.

Latent-space models train through ``mixflow_bench.train``; the toy recipes only need a few hundred Adam steps on
in-memory vectors, which this loop does without the multi-GPU machinery.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn


def _save_atomic(obj: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def train_toy(model: nn.Module, objective: Any, data: Any, config: Any, out_dir: Path, final: Path) -> Path:
    """Train ``model`` on ``data`` (x, y tensors) for ``config.steps`` Adam steps; EMA weights to ``final``."""
    out_dir = Path(out_dir)
    ckpt = out_dir / "checkpoint.pt"
    ema = copy.deepcopy(model).requires_grad_(False)
    betas = tuple(config.betas)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, betas=betas, weight_decay=config.weight_decay)
    gen = torch.Generator().manual_seed(config.seed)
    step = 0
    if ckpt.exists():
        state = torch.load(ckpt, map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["opt"])
        gen.set_state(state["generator"])
        step = state["step"]
    model.train()
    while step < config.steps:
        idx = torch.randint(len(data.x), (config.batch_size,), generator=gen)
        x1, y = data.x[idx], data.y[idx]
        randomness = objective.draw(config.batch_size, tuple(x1.shape[1:]), gen)
        loss = objective.loss(model, x1, y, randomness).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip:
            nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        opt.step()
        with torch.no_grad():
            for p_ema, p in zip(ema.parameters(), model.parameters()):
                p_ema.lerp_(p, 1.0 - config.ema_decay)
        step += 1
        if step % config.checkpoint_every == 0 or step == config.steps:
            _save_atomic(
                {"model": model.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(),
                 "generator": gen.get_state(), "step": step},
                ckpt,
            )  # fmt: skip
    _save_atomic(ema.state_dict(), final)
    return final
