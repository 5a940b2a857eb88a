"""The training loop shared by baseline training and MixFlow post-training.

It knows nothing about the model or the loss: a :class:`~mixflow_bench.train.protocols.TrainingObjective`
supplies per-sample losses and a :class:`~mixflow_bench.train.protocols.Batches` source supplies data.

Determinism: a single ``torch.Generator`` on the training device, seeded with ``config.seed`` (the *training
generator*, :func:`~mixflow_bench.train.rng.training_generator`), is used only for
``objective.draw(global_batch_size, sample_shape, generator)`` once per step; every rank draws the same global
batch and keeps rows ``[rank*B_local, (rank+1)*B_local)``. The draws, the data order and the loss (mean over the
global batch, gradients averaged by DDP) therefore do not depend on the number of processes (on one GPU type: a
CUDA generator's stream depends on the device's multiprocessor count). Drawing on the device matters for speed:
RAE's global batch is 1024 x 768 x 16 x 16 normals per step, about a second on one CPU thread. Checkpoints hold
the model, EMA, optimizer, schedule position, every RNG state and the data position, so a run that is killed and
resumed ends bit-identical to one that was not (on the same hardware and world size); a checkpoint whose
generator ran on the CPU keeps drawing there when resumed on a GPU, for the same reason.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
from torch import Tensor, nn

from mixflow_bench.atomic import atomic_write_text
from mixflow_bench.progress import progress_display
from mixflow_bench.train import checkpoint as ckpt
from mixflow_bench.train.distributed import DistContext, setup
from mixflow_bench.train.ema import create_ema, update_ema
from mixflow_bench.train.protocols import Batches, TrainingObjective
from mixflow_bench.train.rng import capture_rng_state, generator_for_resume, restore_rng_state, training_generator
from mixflow_bench.train.schedule import SCHEDULES, learning_rate

LOG_FILE = "log.jsonl"
CHECKPOINT_FORMAT = "mixflow-bench-train/1"
# Fields that must match between a checkpoint and the config resuming it (others, e.g. steps, may change).
_RESUME_INVARIANTS = ("global_batch_size", "seed")


@dataclass
class TrainConfig:
    """Optimisation settings of one run (AdamW + EMA + LR schedule); see the module docstring for randomness.

    ``decay_start``/``decay_end`` bound the linear or cosine decay from ``lr`` to ``final_lr`` (defaults:
    ``warmup_steps`` and ``steps``). Checkpoints are written every ``checkpoint_every`` steps and at the end;
    the newest ``keep_last`` are kept, plus every one whose step is a multiple of ``keep_every``.
    """

    steps: int
    global_batch_size: int
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    eps: float = 1e-8
    ema_decay: float = 0.9999
    grad_clip: float | None = None
    precision: str = "fp32"
    tf32: bool = True
    lr_schedule: str = "constant"
    warmup_steps: int = 0
    final_lr: float | None = None
    decay_start: int | None = None
    decay_end: int | None = None
    checkpoint_every: int = 1000
    keep_last: int = 2
    keep_every: int | None = None
    log_every: int = 100
    seed: int = 0
    fused_adamw: bool = True
    compile: bool = False
    find_unused_parameters: bool = False
    device: str | None = None

    def __post_init__(self) -> None:
        self.betas = (float(self.betas[0]), float(self.betas[1]))
        problems = []
        if self.steps < 0:
            problems.append(f"steps must be >= 0, got {self.steps}")
        if self.global_batch_size < 1:
            problems.append(f"global_batch_size must be >= 1, got {self.global_batch_size}")
        if self.precision not in ("fp32", "bf16"):
            problems.append(f"precision must be 'fp32' or 'bf16', got {self.precision!r}")
        if self.lr_schedule not in SCHEDULES:
            problems.append(f"lr_schedule must be one of {SCHEDULES}, got {self.lr_schedule!r}")
        if self.lr_schedule != "constant" and self.final_lr is None:
            problems.append(f"lr_schedule {self.lr_schedule!r} needs final_lr")
        if not 0.0 <= self.ema_decay <= 1.0:
            problems.append(f"ema_decay must lie in [0, 1], got {self.ema_decay}")
        if self.grad_clip is not None and self.grad_clip <= 0:
            problems.append(f"grad_clip must be positive or None, got {self.grad_clip}")
        for name in ("checkpoint_every", "log_every", "keep_last"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1, got {getattr(self, name)}")
        if problems:
            raise ValueError("invalid TrainConfig: " + "; ".join(problems))

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainConfig:
        """Build from a recipe mapping; unknown keys are an error naming them."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig keys {unknown}; known keys are {sorted(known)}")
        return cls(**dict(values))

    def lr_at(self, step: int) -> float:
        """Learning rate of the update after ``step`` previous updates."""
        return learning_rate(
            step,
            base_lr=self.lr,
            schedule=self.lr_schedule,
            warmup_steps=self.warmup_steps,
            final_lr=self.final_lr,
            decay_start=self.warmup_steps if self.decay_start is None else self.decay_start,
            decay_end=self.steps if self.decay_end is None else self.decay_end,
        )


@dataclass
class TrainResult:
    """What a call to :func:`train` did."""

    step: int
    start_step: int
    out_dir: Path
    last_checkpoint: Path | None
    final_loss: float | None
    images_per_s: float | None
    stopped_early: bool
    history: list[dict[str, Any]] = field(default_factory=list)


def _unwrap(module: nn.Module) -> nn.Module:
    while True:
        if hasattr(module, "_orig_mod"):  # torch.compile
            module = module._orig_mod
        elif isinstance(module, nn.parallel.DistributedDataParallel):
            module = module.module
        else:
            return module


def _init_weights(source: str | os.PathLike[str] | Mapping[str, Any]) -> tuple[Mapping[str, Tensor], Any]:
    """(weights, ema weights or None) from a raw state dict or a training checkpoint (path or mapping)."""
    state = source if isinstance(source, Mapping) else ckpt.load_checkpoint(source)
    if "model" in state and isinstance(state["model"], Mapping):
        ema = state.get("ema")
        return state["model"], ema if isinstance(ema, Mapping) else None
    if "ema" in state and isinstance(state["ema"], Mapping):
        return state["ema"], state["ema"]
    return state, None


def _truncate_log(path: Path, step: int) -> None:
    """Drop log lines after ``step`` (written after the checkpoint we resume from) so none are duplicated;
    a line torn by a kill mid-write is dropped too."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line)
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
    atomic_write_text(path, "".join(line + "\n" for line in kept))


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _local_slice(tensor: Tensor, ctx: DistContext, local: int, what: str) -> Tensor:
    if tensor.shape[0] == local:
        return tensor
    if ctx.active and tensor.shape[0] == local * ctx.world_size:
        return tensor[ctx.rank * local : (ctx.rank + 1) * local]
    raise ValueError(
        f"{what} has leading dimension {tensor.shape[0]}; expected the local batch {local}"
        + (f" or the global batch {local * ctx.world_size}" if ctx.active else "")
    )


def _rank_rows(value: Tensor, ctx: DistContext, local_batch: int, device: torch.device) -> Tensor:
    """This rank's rows of a global draw, on ``device``; a copy when other ranks exist, so the rest can be freed."""
    rows = value[ctx.rank * local_batch : (ctx.rank + 1) * local_batch]
    if ctx.world_size > 1 and rows.device.type == device.type:
        rows = rows.clone()
    return rows.to(device, non_blocking=True)


def _close_iterator(iterator: Any) -> None:
    """End a batch iterator now (a generator's ``close``) instead of whenever it is garbage-collected."""
    close = getattr(iterator, "close", None)
    if callable(close):
        close()


def _progress_bar(enabled: bool) -> Any:
    """Training steps: a bar in a terminal, a line every 30 s in a log (:mod:`mixflow_bench.progress`)."""
    if not enabled:
        return contextlib.nullcontext()
    return progress_display(
        TextColumn("[bold]train"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}"),
        TextColumn("{task.fields[img_per_s]} img/s"),
        TimeRemainingColumn(),
        unit="steps",
    )


def train(
    model: nn.Module,
    objective: TrainingObjective,
    batches: Batches,
    config: TrainConfig,
    out_dir: str | os.PathLike[str],
    *,
    init_checkpoint: str | os.PathLike[str] | Mapping[str, Any] | None = None,
    resume: bool = True,
    progress: bool = True,
    on_log: Callable[[dict[str, Any]], None] | None = None,
    extra: Mapping[str, Any] | None = None,
    stop_after: int | None = None,
) -> TrainResult:
    """Train ``model`` in place for ``config.steps`` optimizer steps in total and return what happened.

    With ``resume`` and a checkpoint in ``out_dir/checkpoints``, training continues from it (the data
    position and every RNG included) and ``init_checkpoint`` is ignored. Otherwise ``init_checkpoint`` (a
    path, a raw state dict, or a training checkpoint with ``model``/``ema``) sets the start weights, strict;
    the EMA starts from its ``ema`` entry when present, else from the weights. ``extra`` (plain values: the
    recipe) is stored in every checkpoint. ``stop_after`` ends this call after that many steps without a
    final checkpoint, as an interruption would. Under ``torchrun`` the process group is joined, the model is
    wrapped in DDP, and only rank 0 writes files and calls ``on_log`` (with each JSON log record).
    """
    ctx = setup(config.device)
    try:
        return _train(
            model,
            objective,
            batches,
            config,
            Path(out_dir),
            ctx,
            init_checkpoint=init_checkpoint,
            resume=resume,
            progress=progress,
            on_log=on_log,
            extra=dict(extra or {}),
            stop_after=stop_after,
        )
    finally:
        ctx.close()


def _train(
    model: nn.Module,
    objective: TrainingObjective,
    batches: Batches,
    config: TrainConfig,
    out_dir: Path,
    ctx: DistContext,
    *,
    init_checkpoint: str | os.PathLike[str] | Mapping[str, Any] | None,
    resume: bool,
    progress: bool,
    on_log: Callable[[dict[str, Any]], None] | None,
    extra: dict[str, Any],
    stop_after: int | None,
) -> TrainResult:
    if config.global_batch_size % ctx.world_size:
        raise ValueError(
            f"global_batch_size {config.global_batch_size} is not divisible by world size {ctx.world_size}"
        )
    local_batch = config.global_batch_size // ctx.world_size
    device = ctx.device
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = config.tf32
        torch.backends.cudnn.allow_tf32 = config.tf32
    if ctx.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
    log_path = out_dir / LOG_FILE

    generator = training_generator(device, config.seed)
    _seed_everything(config.seed + ctx.rank)
    model.to(device)
    ema = create_ema(model)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        params,
        lr=config.lr,
        betas=config.betas,
        eps=config.eps,
        weight_decay=config.weight_decay,
        fused=True if (config.fused_adamw and device.type == "cuda") else None,
        foreach=None if (config.fused_adamw and device.type == "cuda") else True,  # multi-tensor kernels on CPU
    )

    step = 0
    resume_from = ckpt.latest_checkpoint(out_dir) if resume else None
    if resume_from is not None:
        state = ckpt.load_checkpoint(resume_from)
        saved = state.get("config", {})
        for name in _RESUME_INVARIANTS:
            if name in saved and saved[name] != getattr(config, name):
                raise ValueError(
                    f"cannot resume {resume_from}: it was trained with {name}={saved[name]!r} but the config "
                    f"says {getattr(config, name)!r}; use a new out_dir or the same value"
                )
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        step = int(state["step"])
        if progress and ctx.is_main:
            print(f"resuming from step {step} of {config.steps} ({resume_from})", flush=True)
        batches.load_state_dict(state["data"])
        rng = state["rng"]
        resumed_generator = generator_for_resume(generator, rng[0], str(resume_from))
        if resumed_generator is not generator:
            generator = resumed_generator
            if progress and ctx.is_main:
                print(f"the checkpoint's training noise was drawn on {generator.device.type}; it stays there",
                      flush=True)  # fmt: skip
        if len(rng) == ctx.world_size:
            restore_rng_state(rng[ctx.rank], generator)
        else:  # another world size: the draws stay exact, per-process RNGs are reseeded deterministically
            generator.set_state(rng[0]["generator"])
            _seed_everything(config.seed + ctx.rank + 1_000_003 * step)
    elif not resume and ckpt.list_checkpoints(out_dir):
        raise ValueError(
            f"{out_dir} already holds checkpoints of another run; pass resume=True to continue it "
            "or choose a new out_dir"
        )
    elif init_checkpoint is not None:
        weights, ema_weights = _init_weights(init_checkpoint)
        model.load_state_dict(weights, strict=True)
        ema.load_state_dict(ema_weights if ema_weights is not None else weights, strict=True)
    if ctx.is_main:
        _truncate_log(log_path, step)  # lines past the starting step belong to work that is being redone
    start_step = step

    net: nn.Module = model
    if ctx.active:
        net = nn.parallel.DistributedDataParallel(
            model,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=config.find_unused_parameters,
        )
    if config.compile:
        net = torch.compile(net)
    model.train()
    autocast = (
        torch.autocast(device_type=device.type, dtype=torch.bfloat16)
        if config.precision == "bf16"
        else contextlib.nullcontext()
    )

    def save(at_step: int) -> Path | None:
        rng_states = [capture_rng_state(generator)]
        if ctx.active:
            rng_states = [None] * ctx.world_size
            dist.all_gather_object(rng_states, capture_rng_state(generator))
        path = None
        if ctx.is_main:
            state = {
                "format": CHECKPOINT_FORMAT,
                "step": at_step,
                "model": _unwrap(model).state_dict(),
                "ema": ema.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": {"schedule": config.lr_schedule, "step": at_step, "lr": config.lr_at(at_step)},
                "rng": rng_states,
                "data": batches.state_dict(),
                "world_size": ctx.world_size,
                "config": asdict(config),
                "extra": extra,
            }
            path = ckpt.save_checkpoint(ckpt.checkpoint_dir(out_dir) / ckpt.checkpoint_name(at_step), state)
            ckpt.write_latest_pointer(out_dir, path)
            ckpt.prune_checkpoints(out_dir, config.keep_last, config.keep_every)
        ctx.barrier()
        return path

    data_iter = iter(batches)

    def next_batch() -> tuple[Tensor, Tensor]:
        nonlocal data_iter
        try:
            return next(data_iter)
        except StopIteration:
            data_iter = iter(batches)  # next epoch
            try:
                return next(data_iter)
            except StopIteration:
                raise RuntimeError("the batch source yielded no batch after a fresh iter()") from None

    history: list[dict[str, Any]] = []
    last_checkpoint = resume_from
    loss_sum = torch.zeros((), device=device)
    window_steps = 0
    window_start = time.perf_counter()
    run_start = window_start
    final_loss: float | None = None
    stopped = False
    bar_cm = _progress_bar(progress and ctx.is_main)
    with bar_cm as bar, contextlib.ExitStack() as cleanup:
        # close the batch iterator (the current one: next_batch starts a new one per epoch) however the loop ends,
        # so that a prefetching source stops its thread before the process group is torn down and the process exits
        cleanup.callback(lambda: _close_iterator(data_iter))
        task = bar.add_task("train", total=config.steps, completed=step, loss="-", img_per_s="-") if bar else None
        while step < config.steps:
            if stop_after is not None and step - start_step >= stop_after:
                stopped = True
                break
            x1, y = next_batch()
            x1 = _local_slice(x1, ctx, local_batch, "x1").to(device, non_blocking=True)
            y = _local_slice(y, ctx, local_batch, "y").to(device, non_blocking=True)
            randomness = objective.draw(config.global_batch_size, tuple(x1.shape[1:]), generator)
            for name, value in randomness.items():
                if value.shape[0] != config.global_batch_size:
                    raise ValueError(
                        f"objective.draw returned {name!r} with leading dimension {value.shape[0]}; "
                        f"expected the global batch {config.global_batch_size}"
                    )
            local_randomness = {name: _rank_rows(value, ctx, local_batch, device) for name, value in randomness.items()}
            del randomness  # the other ranks' rows: on the device, the global noise is freed here

            lr = config.lr_at(step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            with autocast:
                losses = objective.loss(net, x1, y, local_randomness)
            if losses.shape != (local_batch,):
                raise ValueError(
                    f"objective.loss returned shape {tuple(losses.shape)}; expected ({local_batch},)"
                )
            loss = losses.float().mean()
            loss.backward()
            if config.grad_clip is not None:
                grad_norm = nn.utils.clip_grad_norm_(params, config.grad_clip)
            else:
                grad_norm = nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            update_ema(ema, _unwrap(model), config.ema_decay)
            step += 1
            loss_sum += loss.detach()
            window_steps += 1

            if step % config.log_every == 0 or step == config.steps:
                mean_loss = loss_sum / window_steps
                if ctx.active:
                    dist.all_reduce(mean_loss)
                    mean_loss = mean_loss / ctx.world_size
                now = time.perf_counter()
                record = {
                    "step": step,
                    "loss": float(mean_loss),
                    "grad_norm": float(grad_norm),
                    "lr": lr,
                    "images_per_s": config.global_batch_size * window_steps / max(now - window_start, 1e-9),
                }
                final_loss = record["loss"]
                loss_sum.zero_()
                window_steps, window_start = 0, now
                if ctx.is_main:
                    with log_path.open("a") as handle:
                        handle.write(json.dumps(record) + "\n")
                    history.append(record)
                    if bar is not None:
                        bar.update(task, loss=f"{record['loss']:.4f}", img_per_s=f"{record['images_per_s']:.1f}")
                    if on_log is not None:
                        on_log(record)
            if bar is not None:
                bar.update(task, completed=step)
            if step % config.checkpoint_every == 0 or step == config.steps:
                last_checkpoint = save(step) or last_checkpoint
    ctx.barrier()  # no rank leaves (and tears down the group) while another is inside a collective
    elapsed = time.perf_counter() - run_start
    done = step - start_step
    return TrainResult(
        step=step,
        start_step=start_step,
        out_dir=out_dir,
        last_checkpoint=last_checkpoint,
        final_loss=final_loss,
        images_per_s=config.global_batch_size * done / elapsed if done and elapsed > 0 else None,
        stopped_early=stopped,
        history=history,
    )
