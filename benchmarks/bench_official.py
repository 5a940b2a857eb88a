"""The official SiT and RAE code against this project's exact and fast paths: throughput, in one run.

The peers are the official repositories' own code, imported from local checkouts (``tools/parity/_official``
or ``--official-root``; ``tools/parity/checkout_official.py`` makes them at the pinned commits) and run at
their own defaults. This project's side runs through its own entry points: ``model_generator`` (what
``mixflow-bench sample`` drives) for sampling and the training engine's ``train`` for training, with the
settings of the paper recipes (exact: ``tf32`` eager, the recipes' default; fast: ``--fast``, bf16 autocast +
``torch.compile``).

Cases (``--case``: comma-separated, or ``all``; they run in this order):

* ``sit-sde``: SiT-XL/2 256, SDE Euler-Maruyama 250 steps, CFG 1.5. Official: ``transport.Sampler.sample_sde``
  with sample_ddp.py's defaults (Euler, diffusion "sigma", last step "Mean" 0.04) on ``forward_with_cfg``,
  ``--per-proc-batch-size`` 4 (doubled by CFG), TF32 matmuls on, the diffusers SD-VAE decode. Ours: recipe
  ``sit-xl-256-sde-cfg``: exact (batch 64, the recipes' batch) and fast (batch 256); with ``--fp8`` also
  ``fast-fp8`` (opt-in: the fast settings with ``precision: fp8``, FP8 linears, batch 256), timed after fast and
  skipped with a one-line note on a device without FP8 matmuls.
* ``train-sit``: one training step of SiT-XL/2 256. Official: ``transport.training_losses``, backward, AdamW
  and train.py's EMA loop, fp32 with TF32, per-GPU batch 32 (global 256 on 8 GPUs). Ours: MixFlow
  post-training step of recipe ``sit-xl-256`` (exact: fp32/TF32 eager, batch 32; fast: bf16 + compile, 64).
* ``train-rae``: one training step of DiT^DH-XL 256. Official: RAE's src/train.py step with its
  DiTDH-XL_DINOv2-B training config (fp32/TF32; ``torch.compile`` of the model forward, which train.py
  requires; logit-normal shifted times; clip 1.0; fused AdamW and its LR scheduler; EMA 0.9995), per-GPU batch
  32. Ours: recipe ``rae-256-cfg`` (exact batch 32, fast batch 64).
* ``rae-ag``: DiT^DH-XL with DiT^DH-S autoguidance 1.42, 49 Euler steps. Official: RAE's sample_ddp.py path
  with the DiTDHXL-DINOv2-B_AG sampling config (``Sampler.sample_ode`` euler on ``forward_with_autoguidance``,
  ``--per-proc-batch-size`` 125 doubled by the null half, fp32/TF32, ``RAE.decode`` with the ViT-XL decoder).
  Ours: recipe ``rae-256-cfg`` (exact batch 64, fast batch 256; with ``--fp8`` also ``fast-fp8``, batch 256).

Left out on both sides: encoding training images (both train on latents), DDP (one process, no wrapper),
writing images. Random weights, the same tensors for the official and our networks. Timing is
``benchmarks/timing.py`` (warm-up until the step time settles, median of 3 x 20 steps, the repeats' range as
spread). A timed sampler call runs ``--call-steps`` steps of the real sampler (the same count for every path;
SiT's SDE needs 2); the per-step time is extrapolated to the full step count, and the settled decode time of
one batch is added. A training step is one optimizer step; its time is the interval between the loop's
per-step (synchronised) log callbacks on our side, and one call of the restated loop body on the official
side.

Every case writes ``official-<case>.json`` into ``--out`` after each path, so a run cut short keeps what it
finished; ``--budget-s`` stops timing (and marks the rest skipped) when the time is up. ``--quick``: tiny
models and batches, a few steps: a smoke run of the whole script (its numbers measure nothing).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import datetime
import gc
import importlib.metadata
import json
import math
import os
import platform
import re
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from _official import DEFAULT_OFFICIAL_ROOT, adopt, peer, present, randomize_, use_official
from timing import (
    DEFAULT_POLICY,
    MAX_RATIO_SPREAD,
    QUICK_POLICY,
    DeadlineExceeded,
    Settler,
    StopTiming,
    Timing,
    TimingPolicy,
    ratio_is_stable,
    ratio_spread,
    step_callback,
    time_steps,
)

CASES = ("sit-sde", "train-sit", "train-rae", "rae-ag")
PEER_OF = {"sit-sde": "SiT", "train-sit": "SiT", "train-rae": "RAE", "rae-ag": "RAE"}
KIND_OF = {"sit-sde": "sampling", "rae-ag": "sampling", "train-sit": "train", "train-rae": "train"}
# the "case" strings of bench_sampling.py / bench_train.py, which reproduce --plan matches (estimate.py)
CASE_NAMES = {
    "sit-sde": "SiT-XL/2 256, SDE-250, CFG 1.5",
    "train-sit": "SiT-XL/2 256, MixFlow gamma 0.8",
    "train-rae": "DiT^DH-XL 256, MixFlow gamma 0.4",
    "rae-ag": "RAE DiT^DH-XL 256, Euler-49, AG 1.42",
}
BATCHES = {
    "sit-sde": {"official": 4, "exact": 64, "fast": 256},
    "train-sit": {"official": 32, "exact": 32, "fast": 64},
    "train-rae": {"official": 32, "exact": 32, "fast": 64},
    "rae-ag": {"official": 125, "exact": 64, "fast": 256},
}
PATH_ORDER = ("official", "fast", "exact")  # the ratio that matters most first
FP8_PATH = "fast-fp8"  # sampling cases with --fp8: the fast settings with precision fp8, timed right after fast
DECODE_POLICY = TimingPolicy(window=2, tolerance=0.05, min_warmup=1, max_warmup=10, timed=3, repeats=3)
QUICK_DECODE_POLICY = TimingPolicy(window=2, tolerance=10.0, min_warmup=1, max_warmup=1, timed=1, repeats=1)
MIN_PATH_S = 20.0  # with --budget-s: a path is not started with less time than this left
SIT_FULL_STEPS = 250  # sample_ddp.py --num-sampling-steps (SDE: 250 drift evaluations, the last a "Mean" step)
SIT_CFG_SCALE = 1.5
SIT_NULL_LABEL = 1000
SIT_LATENT = (4, 32, 32)
RAE_SAMPLING_CONFIG = "configs/stage2/sampling/ImageNet256/DiTDHXL-DINOv2-B_AG.yaml"
RAE_TRAINING_CONFIG = "configs/stage2/training/ImageNet256/DiTDH-XL_DINOv2-B.yaml"
RAE_DECODER_CONFIG = "configs/decoder/ViTXL/config.json"
# --quick: tiny networks of the same classes (the official and ours built alike)
QUICK_SIT = dict(input_size=32, patch_size=2, hidden_size=64, depth=2, num_heads=2, learn_sigma=True)
QUICK_SIT_FP8 = {**QUICK_SIT, "hidden_size": 256, "num_heads": 4}  # sit-sde --quick --fp8: linears FP8 can run
QUICK_DITDH_MAIN = dict(hidden_size=[128, 128], depth=[2, 1], num_heads=[2, 2])
QUICK_DITDH_GUIDE = dict(hidden_size=[64, 128], depth=[1, 1], num_heads=[1, 2])
QUICK_RAE_DECODER = dict(decoder_hidden_size=64, decoder_num_hidden_layers=1, decoder_num_attention_heads=2,
                         decoder_intermediate_size=128)  # fmt: skip
QUICK_SD_VAE = dict(block_out_channels=(8, 8, 8, 8), layers_per_block=1, norm_num_groups=8)


@dataclasses.dataclass
class Run:
    device: torch.device
    quick: bool
    official_root: Path
    out: Path
    sit_call_steps: int
    rae_call_steps: int
    batches: dict[str, dict[str, int]]
    policy: TimingPolicy
    decode_policy: TimingPolicy
    env: dict[str, Any]
    deadline: float | None = None
    fp8: bool = False  # sit-sde and rae-ag: also time the fast path with FP8 linears (--fp8)
    stopped: bool = False  # the time budget ran out
    failed: bool = False  # some path raised an error
    start: float = dataclasses.field(default_factory=time.perf_counter)

    @property
    def compile_ok(self) -> bool:
        """torch.compile is used on CUDA; a --quick run on a CPU leaves it out (its C++ builds take minutes)."""
        return self.device.type == "cuda" or not self.quick

    def log(self, msg: str) -> None:
        print(f"[{time.perf_counter() - self.start:7.1f} s] {msg}", flush=True)


def _versions() -> dict[str, str | None]:
    out = {}
    for pkg in ("timm", "einops", "torchdiffeq", "diffusers", "transformers", "numpy"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def environment(device: torch.device) -> dict[str, Any]:
    cuda = device.type == "cuda"
    return {
        "gpu": torch.cuda.get_device_name(device) if cuda else f"cpu ({os.cpu_count()} threads)",
        "torch": torch.__version__,
        "cuda": torch.version.cuda if cuda else None,
        "python": platform.python_version(),
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "versions": _versions(),
    }


@contextlib.contextmanager
def official_tf32():
    """TF32 matmuls and convolutions on, as SiT's and RAE's sampling and training scripts set them."""
    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


class Counter:
    """Wraps a callable and counts its calls (network evaluations per sampler step, measured)."""

    def __init__(self, fn: Callable):
        self.fn, self.calls = fn, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.fn(*args, **kwargs)


class CaseRecord:
    """One case's JSON file, rewritten after every path (a run cut short keeps the finished paths)."""

    def __init__(self, run: Run, key: str, settings: dict[str, Any]):
        self.run = run
        self.file = run.out / f"official-{key}.json"
        name = PEER_OF[key]
        self.peer = peer(name, run.official_root)
        self.peer_label = f"{self.peer['repo']}@{(self.peer['commit'] or 'unknown')[:12]}"
        self.case = CASE_NAMES[key] + (" (quick: tiny models)" if run.quick else "")
        self.data: dict[str, Any] = {
            "benchmark": "benchmarks/bench_official.py",
            "key": key,
            "case": self.case,
            "kind": KIND_OF[key],
            "quick": run.quick,
            **run.env,
            "peer": self.peer,
            "policy": dataclasses.asdict(run.policy),
            "decode_policy": dataclasses.asdict(run.decode_policy) if KIND_OF[key] == "sampling" else None,
            "settings": settings,
            "rows": [],
            "finished": False,
        }
        self.write()

    def common(self, path: str, batch: int, precision: str, compile: bool | str, **extra) -> dict[str, Any]:
        """The fields every row carries: what ran, where, against which peer."""
        return {
            "case": self.case,
            "kind": self.data["kind"],
            "path": path,
            "implementation": "official code" if path == "official" else "mixflow-bench",
            "peer": self.peer_label,
            "gpu": self.run.env["gpu"],
            "torch": self.run.env["torch"],
            "batch": batch,
            "precision": precision,
            "compile": compile,
            **extra,
        }

    def add(self, row: dict[str, Any]) -> None:
        rows = self.data["rows"]
        rows.append(row)
        official = next((r for r in rows if r["path"] == "official" and r.get("status") == "ok"), None)
        for r in rows:
            if official is not None and r["path"] != "official" and r.get("status") == "ok":
                lo, hi = r["images_per_s_range"]
                olo, ohi = official["images_per_s_range"]
                r["ratio_vs_official"] = r["images_per_s"] / official["images_per_s"]
                r["ratio_range"] = [lo / ohi, hi / olo]
                r["ratio_spread"] = ratio_spread(r["ratio_vs_official"], r["ratio_range"])
                r["ratio_stable"] = ratio_is_stable(r["ratio_vs_official"], r["ratio_range"])
        self.write()
        status = row.get("status")
        if status == "ok":
            extra = f", x{row['ratio_vs_official']:.2f} vs official" if "ratio_vs_official" in row else ""
            if row.get("ratio_stable") is False:
                extra += (f" UNSTABLE: the ratio's range {row['ratio_range'][0]:.2f}-{row['ratio_range'][1]:.2f} "
                          f"spans {row['ratio_spread']:.0%} of it (> {MAX_RATIO_SPREAD:.0%}); quote it only with "
                          "that said")
            spread = row["timing"]["spread"]
            self.run.log(f"{self.data['key']} {row['path']}: {row['images_per_s']:.3f} img/s "
                         f"(batch {row['batch']}, spread {spread:.1%}){extra}")  # fmt: skip
        else:
            self.run.log(f"{self.data['key']} {row['path']}: {status} {row.get('error', row.get('reason', ''))}")

    def finish(self) -> None:
        self.data["finished"] = True
        self.write()

    def write(self) -> None:
        self.file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.file.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.data, indent=2, default=str))
        os.replace(tmp, self.file)


def guarded(run: Run, record: CaseRecord, base: dict[str, Any], measure: Callable[[], dict[str, Any]]) -> None:
    """Run one path and add its row; the budget, an out-of-memory or another error become the row's status."""
    if run.deadline is not None and run.deadline - time.perf_counter() < MIN_PATH_S:
        run.stopped = True
    if run.stopped:
        record.add({**base, "status": "skipped", "reason": "time budget used up"})
        return
    cuda = run.device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    try:
        fields = measure()
        row = {**base, "status": "ok", **fields}
        if cuda:
            row["peak_mem_gb"] = torch.cuda.max_memory_allocated() / 2**30
        record.add(row)
    except DeadlineExceeded as err:
        run.stopped = True
        reason = "time budget used up while timing"
        record.add({**base, "status": "deadline", "reason": reason, "progress": err.partial})
    except torch.cuda.OutOfMemoryError as err:
        run.failed = True
        record.add({**base, "status": "oom", "error": str(err)[:400]})
    except Exception as err:  # noqa: BLE001 - one failing path must not lose the others
        run.failed = True
        tb = traceback.format_exc()
        record.add({**base, "status": "error", "error": f"{type(err).__name__}: {err}"[:400], "traceback": tb[-3000:]})
        print(tb, file=sys.stderr, flush=True)
    finally:
        release()


def release() -> None:
    """Free what the previous path left (cycles included) before the next one allocates."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def sampling_fields(call: Timing, decode: Timing, batch: int, steps_per_call: int, full_steps: int) -> dict:
    """Per-step and per-image numbers of a sampling path: full_steps x per-step time + one batch's decode."""
    per_step = call.median_s / steps_per_call

    def rate(step_s: float) -> float:
        return batch / (full_steps * step_s + decode.median_s)

    return {
        "s_per_step": per_step,
        "decode_s": decode.median_s,
        "images_per_s": rate(per_step),
        "images_per_s_range": [rate(call.max_s / steps_per_call), rate(call.min_s / steps_per_call)],
        "steps_per_timed_call": steps_per_call,
        "timing": call.as_dict(),
        "decode_timing": decode.as_dict(),
    }


def train_fields(step: Timing, batch: int) -> dict:
    return {
        "s_per_step": step.median_s,
        "images_per_s": batch / step.median_s,
        "images_per_s_range": [batch / step.max_s, batch / step.min_s],
        "timing": step.as_dict(),
    }


def fast_settings(run: Run) -> dict[str, Any]:
    """``sample --fast`` / ``reproduce --fast`` (bf16 autocast, fused attention, torch.compile)."""
    from mixflow_bench.cli.sample_cmd import FAST_SAMPLING

    return {**FAST_SAMPLING, "compile": FAST_SAMPLING["compile"] and run.compile_ok}


def sampling_settings(run: Run, mode: str) -> dict[str, Any]:
    """The sample-section switches of a path: none for exact, ``--fast``'s for fast, and precision fp8 on top of
    them for fast-fp8 (``sample --fp8``)."""
    if mode == FP8_PATH:
        return {**fast_settings(run), "precision": "fp8"}
    return fast_settings(run) if mode == "fast" else {}


def sampling_paths(run: Run) -> tuple[str, ...]:
    """A sampling case's paths in timing order: fast-fp8 (with --fp8) right after fast, before exact."""
    if not run.fp8:
        return PATH_ORDER
    i = PATH_ORDER.index("fast") + 1
    return (*PATH_ORDER[:i], FP8_PATH, *PATH_ORDER[i:])


def _label(precision: str) -> str:
    """The training engine's ``fp32`` runs with TF32 matmuls (``TrainConfig.tf32``), i.e. ``tf32``."""
    return "tf32" if precision == "fp32" else precision


# --- our side ---------------------------------------------------------------------------------------------------
def ours_sampling(run: Run, record: CaseRecord, key: str, mode: str, recipe: str, spec_name: str, model, guide,
                  codec, steps: int, steps_per_call: int, full_steps: int) -> None:  # fmt: skip
    """Time ``model_generator`` (recipe settings; ``mode`` fast adds ``--fast``, fast-fp8 ``--fp8``) and the codec's
    decode. fast-fp8 on a device without FP8 matmuls is a skipped row with the one-line reason."""
    from mixflow_bench.models.float8 import float8_unsupported_reason
    from mixflow_bench.models.zoo import get_spec
    from mixflow_bench.recipes.loader import load_recipe
    from mixflow_bench.sampling.seeding import initial_noise, step_noise
    from mixflow_bench.sampling.velocity import model_generator, precision_context

    batch = run.batches[key][mode]
    sample = load_recipe(recipe).sample
    cfg = dataclasses.replace(sample, steps=steps, batch_size=batch, **sampling_settings(run, mode))
    base = record.common(mode, batch, cfg.precision, "default" if cfg.compile else False, attention=cfg.attention,
                         sampler=f"{sample.sampler} {sample.steps}", full_steps=full_steps,
                         recipe=recipe, guidance=dataclasses.asdict(sample.guidance))  # fmt: skip
    dev = run.device
    if cfg.precision == "fp8" and (reason := float8_unsupported_reason(dev)) is not None:
        record.add({**base, "status": "skipped", "reason": reason})
        return

    def measure() -> dict[str, Any]:
        spec = get_spec(spec_name)
        gen = model_generator(spec, model, cfg, codec=None, guide_model=guide, device=dev)
        idx, shape = list(range(batch)), tuple(spec.latent_shape)
        noise = initial_noise(0, idx, shape)
        y = torch.randint(0, spec.num_classes, (batch,), generator=torch.Generator().manual_seed(0))

        def call():
            return gen.generate(noise, y, lambda step: step_noise(0, idx, shape, step))

        calls = {"main": 0, "guide": 0}
        if mode == "exact":  # eager: count the network calls of one sampler call through forward hooks
            hooks = [net.register_forward_pre_hook(lambda *_, w=which: calls.__setitem__(w, calls[w] + 1))
                     for which, net in (("main", model), ("guide", guide)) if net is not None]  # fmt: skip
            call()
            for hook in hooks:
                hook.remove()
        timing = time_steps(call, run.policy, device=dev, deadline=run.deadline)
        z = torch.randn(batch, *shape, device=dev)
        if hasattr(codec, "decoder") and hasattr(codec.decoder, "set_attention"):
            codec.decoder.set_attention(cfg.attention)

        def decode():
            with torch.no_grad(), precision_context(cfg.precision, dev):
                return codec.decode(z)

        dec = time_steps(decode, run.decode_policy, device=dev, deadline=run.deadline)
        out = sampling_fields(timing, dec, batch, steps_per_call, full_steps)
        if mode == "exact":
            per_step = {w: c / steps_per_call for w, c in calls.items() if c or w == "main"}
            out["network_calls_per_step"] = per_step if guide is not None else per_step["main"]
        return out

    guarded(run, record, base, measure)


def ours_training(run: Run, record: CaseRecord, key: str, mode: str, recipe_name: str, spec_name: str,
                  build: Callable[[], torch.nn.Module], state: dict, shape: tuple[int, ...]) -> None:  # fmt: skip
    """Time the training engine on the recipe's objective and optimiser settings (fast: bf16 + compile)."""
    from mixflow_bench.models.zoo import get_spec
    from mixflow_bench.pipeline.tasks import build_objective
    from mixflow_bench.recipes.loader import load_recipe
    from mixflow_bench.train.batches import InMemoryBatches
    from mixflow_bench.train.engine import TrainConfig, train

    batch = run.batches[key][mode]
    recipe = load_recipe(recipe_name)
    t = recipe.train
    fast = mode == "fast"
    precision = "bf16" if fast else t.precision
    compiled = (fast or t.compile) and run.compile_ok  # exact: the recipe's setting (RAE compiles, as official)
    base = record.common(mode, batch, _label(precision), "default" if compiled else False, recipe=recipe_name,
                         objective=dataclasses.asdict(t.objective), grad_clip=t.grad_clip, ema_decay=t.ema_decay,
                         optimizer=f"AdamW fused, lr {t.lr}, betas {tuple(t.betas)}")  # fmt: skip

    def measure() -> dict[str, Any]:
        with torch.device("meta"):
            model = build()
        model.load_state_dict({k: v.detach().clone() for k, v in state.items()}, strict=True, assign=True)
        objective = build_objective(recipe, get_spec(spec_name))
        config = TrainConfig(
            steps=10**9, global_batch_size=batch, lr=t.lr, betas=tuple(t.betas), weight_decay=t.weight_decay,
            ema_decay=t.ema_decay, grad_clip=t.grad_clip, precision=precision, lr_schedule=t.lr_schedule,
            warmup_steps=t.warmup_steps, final_lr=t.final_lr, checkpoint_every=10**9, log_every=1, seed=0,
            compile=compiled, device=str(run.device),
        )  # fmt: skip
        g = torch.Generator().manual_seed(0)
        batches = InMemoryBatches(torch.randn(2 * batch, *shape, generator=g),
                                  torch.randint(0, 1000, (2 * batch,), generator=g), batch, seed=0)  # fmt: skip
        settler = Settler(run.policy)
        with tempfile.TemporaryDirectory() as tmp:
            with contextlib.suppress(StopTiming):  # the callback ends training once the timing is done
                train(model, objective, batches, config, tmp, resume=False, progress=False,
                      on_log=step_callback(settler, deadline=run.deadline))  # fmt: skip
        return train_fields(settler.result(), batch)

    guarded(run, record, base, measure)


# --- SiT ----------------------------------------------------------------------------------------------------------
def case_sit_sde(run: Run) -> None:
    use_official("SiT", run.official_root)
    from diffusers import AutoencoderKL
    from models import SiT, SiT_models  # type: ignore[import-not-found]
    from transport import Sampler, create_transport  # type: ignore[import-not-found]

    from mixflow_bench.models.autoencoders import SDVAECodec, sd_vae_config
    from mixflow_bench.models.sit import SiT as OurSiT
    from mixflow_bench.models.sit import sit

    key, dev, k = "sit-sde", run.device, run.sit_call_steps
    sde = dict(sampling_method="Euler", diffusion_form="sigma", diffusion_norm=1.0, last_step="Mean",
               last_step_size=0.04)  # fmt: skip
    record = CaseRecord(run, key, {"official_sampler": {**sde, "num_steps": SIT_FULL_STEPS}, "cfg_scale": SIT_CFG_SCALE,
                                   "call_steps": k, "batches": run.batches[key]})  # fmt: skip
    quick_sit = QUICK_SIT_FP8 if run.fp8 else QUICK_SIT
    with torch.device(dev):
        if run.quick:
            official = SiT(**quick_sit)
        else:  # sample_ddp.py: the 256 px checkpoint is learn_sigma
            official = SiT_models["SiT-XL/2"](input_size=32, num_classes=1000, learn_sigma=True)
    randomize_(official).eval()
    ours = adopt(official, (lambda: OurSiT(**quick_sit)) if run.quick else (lambda: sit("XL", 2)))
    vae_config = {**sd_vae_config(), **(QUICK_SD_VAE if run.quick else {})}
    with torch.device(dev):
        vae = AutoencoderKL(**vae_config).eval().requires_grad_(False)
    codec = SDVAECodec("sd-vae-ft-ema", 256, vae)

    # the official sampler, as sample_ddp.py builds and calls it (transport defaults: Linear, velocity)
    sample_fn = Sampler(create_transport("Linear", "velocity", None, None, None)).sample_sde(**sde, num_steps=k)
    n = run.batches[key]["official"]
    forward = Counter(official.forward_with_cfg)

    def official_call(model_fn=official.forward_with_cfg):
        with torch.no_grad(), official_tf32():
            z = torch.randn(n, official.in_channels, 32, 32, device=dev)
            y = torch.randint(0, 1000, (n,), device=dev)
            z = torch.cat([z, z], 0)
            y = torch.cat([y, torch.tensor([SIT_NULL_LABEL] * n, device=dev)], 0)
            samples = sample_fn(z, model_fn, y=y, cfg_scale=SIT_CFG_SCALE)[-1]
            samples, _ = samples.chunk(2, dim=0)
        return samples

    def official_decode(z):
        with torch.no_grad(), official_tf32():
            samples = vae.decode(z / 0.18215).sample
            return torch.clamp(127.5 * samples + 128.0, 0, 255).permute(0, 2, 3, 1).to("cpu", dtype=torch.uint8)

    def official_measure() -> dict[str, Any]:
        official_call(forward)  # one call counted: network evaluations per step
        timing = time_steps(official_call, run.policy, device=dev, deadline=run.deadline)
        z = torch.randn(n, *SIT_LATENT, device=dev)
        dec = time_steps(lambda: official_decode(z), run.decode_policy, device=dev, deadline=run.deadline)
        return {**sampling_fields(timing, dec, n, k, SIT_FULL_STEPS), "network_calls_per_step": forward.calls / k}

    for path in sampling_paths(run):
        if path == "official":
            base = record.common("official", n, "tf32", False, attention="timm Attention (fused SDPA if available)",
                                 sampler=f"transport.Sampler.sample_sde {SIT_FULL_STEPS}", full_steps=SIT_FULL_STEPS,
                                 model_fn="SiT.forward_with_cfg")  # fmt: skip
            guarded(run, record, base, official_measure)
        else:
            ours_sampling(run, record, key, path, "sit-xl-256-sde-cfg", "sit-xl-2", ours, None, codec,
                          steps=k, steps_per_call=k, full_steps=SIT_FULL_STEPS)  # fmt: skip
    record.finish()


def case_train_sit(run: Run) -> None:
    use_official("SiT", run.official_root)
    from models import SiT, SiT_models  # type: ignore[import-not-found]
    from transport import create_transport  # type: ignore[import-not-found]

    from mixflow_bench.models.sit import SiT as OurSiT
    from mixflow_bench.models.sit import sit

    key, dev = "train-sit", run.device
    n = run.batches[key]["official"]
    record = CaseRecord(run, key, {"batches": run.batches[key], "official": "train.py loop body: "
                                   "transport.training_losses, zero_grad, backward, AdamW(lr 1e-4, wd 0), EMA 0.9999 "
                                   "(per-parameter loop, restated: train.py imports wandb), loss.item()"})  # fmt: skip
    with torch.device(dev):
        model = SiT(**QUICK_SIT) if run.quick else SiT_models["SiT-XL/2"](input_size=32, num_classes=1000)
    randomize_(model)
    start_state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def official_measure() -> dict[str, Any]:
        ema = copy.deepcopy(model).requires_grad_(False)
        transport = create_transport("Linear", "velocity", None, None, None)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0)
        model.train()
        x = torch.randn(n, *SIT_LATENT, device=dev)
        y = torch.randint(0, 1000, (n,), device=dev)
        ema_params, params = dict(ema.named_parameters()), dict(model.named_parameters())

        def step():
            loss = transport.training_losses(model, x, dict(y=y))["loss"].mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                for name, p in params.items():
                    ema_params[name].mul_(0.9999).add_(p.data, alpha=1 - 0.9999)
            return loss.item()

        with official_tf32():
            timing = time_steps(step, run.policy, device=dev, deadline=run.deadline)
        return train_fields(timing, n)

    build = (lambda: OurSiT(**QUICK_SIT)) if run.quick else (lambda: sit("XL", 2))
    for path in PATH_ORDER:
        if path == "official":
            base = record.common("official", n, "tf32", False, entry="transport.Transport.training_losses",
                                 optimizer="AdamW (multi-tensor), lr 1e-4", ema_decay=0.9999,
                                 grad_clip=None)  # fmt: skip
            guarded(run, record, base, official_measure)
            del model
            release()
        else:
            ours_training(run, record, key, path, "sit-xl-256", "sit-xl-2", build, start_state, SIT_LATENT)
    record.finish()


# --- RAE ----------------------------------------------------------------------------------------------------------
def _rae_yaml(root: Path, rel: str) -> dict[str, Any]:
    """An RAE config file as RAE's scripts see it: OmegaConf reads ``1e-6`` as a float, PyYAML as a string."""
    import yaml

    def floats(value):
        if isinstance(value, dict):
            return {k: floats(v) for k, v in value.items()}
        if isinstance(value, list):
            return [floats(v) for v in value]
        if isinstance(value, str) and re.fullmatch(r"[-+]?\d+(\.\d*)?[eE][-+]?\d+", value):
            return float(value)  # YAML 1.1 wants a dot in "1e-6"; OmegaConf accepts it without
        return value

    return floats(yaml.safe_load((root / rel).read_text()))


def _ditdh_builder(params: dict[str, Any], quick_sizes: dict[str, Any] | None):
    """This project's DiT^DH of the same shape as an official ``DiTwDDTHead(**params)``."""
    from mixflow_bench.models.rae_dit import DiTDH

    p = {**params, **(quick_sizes or {})}
    return lambda: DiTDH(input_size=p["input_size"], in_channels=p["in_channels"], hidden_size=tuple(p["hidden_size"]),
                         depth=tuple(p["depth"]), num_heads=tuple(p["num_heads"]), mlp_ratio=p["mlp_ratio"],
                         num_classes=p["num_classes"])  # fmt: skip


def case_train_rae(run: Run) -> None:
    root = use_official("RAE", run.official_root)
    from stage2.models.DDT import DiTwDDTHead  # type: ignore[import-not-found]
    from stage2.transport import create_transport  # type: ignore[import-not-found]
    from utils.optim_utils import build_optimizer, build_scheduler  # type: ignore[import-not-found]

    key, dev = "train-rae", run.device
    cfg = _rae_yaml(root, RAE_TRAINING_CONFIG)
    params = {**cfg["stage_2"]["params"], **(QUICK_DITDH_MAIN if run.quick else {})}
    training = dict(cfg["training"])
    misc = cfg["misc"]
    shift = math.sqrt(misc["time_dist_shift_dim"] / misc["time_dist_shift_base"])
    n = run.batches[key]["official"]
    official_compile = run.compile_ok
    record = CaseRecord(run, key, {"config": RAE_TRAINING_CONFIG, "batches": run.batches[key],
                                   "official_global_batch": training.get("global_batch_size"),
                                   "official": "src/train.py step: training_losses (fp32), backward, clip_grad_norm_ "
                                   f"{training.get('clip_grad')}, fused AdamW (build_optimizer), LR scheduler "
                                   f"(build_scheduler), EMA {training.get('ema_decay')} (per-parameter loop, "
                                   "restated: utils.train_utils imports omegaconf), loss.item()",
                                   "time_dist_shift": shift})  # fmt: skip
    # torch.normal(mean, std, size) ignores the device context: the official GaussianFourierEmbedding's W stays on
    # the CPU there (the official train.py builds on the CPU and moves the model), hence the .to(dev)
    with torch.device(dev):
        model = DiTwDDTHead(**params).to(dev)
    randomize_(model, keep=("pos_embed", "W"))
    start_state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def official_measure() -> dict[str, Any]:
        ema = copy.deepcopy(model).requires_grad_(False)
        ema_decay = float(training.get("ema_decay", 0.9995))
        clip = training.get("clip_grad")
        model.requires_grad_(True)  # train.py trains every parameter of the stage-2 model
        if official_compile:  # train.py: model.forward = torch.compile(model.forward) (no --compile is an error)
            model.forward = torch.compile(model.forward)
        optimizer, _ = build_optimizer([p for p in model.parameters() if p.requires_grad], training)
        scheduler = build_scheduler(optimizer, 1251, training)[0] if training.get("scheduler") else None
        tparams = dict(cfg["transport"]["params"])
        tparams.pop("time_dist_shift", None)
        transport = create_transport(**tparams, time_dist_shift=shift)
        model.train()
        z = torch.randn(n, *misc["latent_size"], device=dev)
        labels = torch.randint(0, misc["num_classes"], (n,), device=dev)
        ema_params, named = dict(ema.named_parameters()), dict(model.named_parameters())

        def step():
            optimizer.zero_grad(set_to_none=True)
            loss = transport.training_losses(model, z, dict(y=labels))["loss"].mean()
            loss.backward()
            if clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            with torch.no_grad():
                for name, p in named.items():
                    ema_params[name].mul_(ema_decay).add_(p.data, alpha=1 - ema_decay)
            return loss.item()

        with official_tf32():
            timing = time_steps(step, run.policy, device=dev, deadline=run.deadline)
        return train_fields(timing, n)

    build = _ditdh_builder(cfg["stage_2"]["params"], QUICK_DITDH_MAIN if run.quick else None)
    for path in PATH_ORDER:
        if path == "official":
            base = record.common("official", n, "tf32", "default" if official_compile else False,
                                 entry="stage2.transport.Transport.training_losses",
                                 grad_clip=training.get("clip_grad"), ema_decay=training.get("ema_decay"),
                                 optimizer=training.get("optimizer"))  # fmt: skip
            guarded(run, record, base, official_measure)
            del model
            torch._dynamo.reset()
            release()
        else:
            ours_training(run, record, key, path, "rae-256-cfg", "rae-dith-xl-256", build, start_state,
                          tuple(misc["latent_size"]))  # fmt: skip
    record.finish()


def _rae_codec(run: Run):
    """This project's RAE codec with random weights (the ViT-XL decoder; --quick: a one-layer decoder)."""
    from mixflow_bench.models.autoencoders import build_codec
    from mixflow_bench.models.rae_stage1 import (
        DecoderConfig,
        DinoV2Encoder,
        GeneralDecoder,
        LatentStats,
        dinov2_reg_base_config,
    )

    if not run.quick:
        with torch.device(run.device):
            return build_codec("rae-dinov2-b", 256, random_init=True, device=run.device)
    from mixflow_bench.models.autoencoders import RAECodec

    enc_cfg = dinov2_reg_base_config()
    enc_cfg.num_hidden_layers = 1
    decoder = GeneralDecoder(256, DecoderConfig(hidden_size=64, num_layers=1, num_heads=2, intermediate_size=128))
    codec = RAECodec(256, DinoV2Encoder(224, config=enc_cfg), decoder, LatentStats(torch.ones(768, 16, 16)))
    return codec.to(run.device)


def case_rae_ag(run: Run) -> None:
    root = use_official("RAE", run.official_root)
    from stage1 import RAE  # type: ignore[import-not-found]
    from stage1.decoders import GeneralDecoder  # type: ignore[import-not-found]
    from stage1.decoders.utils import ViTMAEConfig  # type: ignore[import-not-found]
    from stage2.models.DDT import DiTwDDTHead  # type: ignore[import-not-found]
    from stage2.transport import Sampler, create_transport  # type: ignore[import-not-found]

    from mixflow_bench.models.rae_stage1 import IMAGENET_MEAN, IMAGENET_STD

    key, dev, k = "rae-ag", run.device, run.rae_call_steps
    cfg = _rae_yaml(root, RAE_SAMPLING_CONFIG)
    main_params = {**cfg["stage_2"]["params"], **(QUICK_DITDH_MAIN if run.quick else {})}
    guidance = cfg["guidance"]
    guide_params = {**guidance["guidance_model"]["params"], **(QUICK_DITDH_GUIDE if run.quick else {})}
    misc = cfg["misc"]
    latent = tuple(misc["latent_size"])
    shift = math.sqrt(misc["time_dist_shift_dim"] / misc["time_dist_shift_base"])
    sampler_params = dict(cfg["sampler"]["params"])
    full_steps = int(sampler_params["num_steps"]) - 1  # num_steps grid points: 49 Euler steps
    scale = float(guidance["scale"])
    interval = (float(guidance.get("t_min", guidance.get("t-min", 0.0))),
                float(guidance.get("t_max", guidance.get("t-max", 1.0))))  # fmt: skip
    null_label = int(misc.get("null_label", misc["num_classes"]))
    record = CaseRecord(run, key, {"config": RAE_SAMPLING_CONFIG, "official_sampler": sampler_params,
                                   "guidance_scale": scale, "time_dist_shift": shift, "call_steps": k,
                                   "batches": run.batches[key]})  # fmt: skip
    # torch.normal(mean, std, size) ignores the device context: the official GaussianFourierEmbedding's W stays on
    # the CPU there (the official train.py builds on the CPU and moves the model), hence the .to(dev)
    with torch.device(dev):
        main = DiTwDDTHead(**main_params).to(dev)
        guide = DiTwDDTHead(**guide_params).to(dev)
    randomize_(main, keep=("pos_embed", "W"), seed=1234).eval()
    randomize_(guide, keep=("pos_embed", "W"), seed=4321).eval()
    ours_main = adopt(main, _ditdh_builder(cfg["stage_2"]["params"], QUICK_DITDH_MAIN if run.quick else None))
    ours_guide = adopt(guide, _ditdh_builder(guidance["guidance_model"]["params"],
                                             QUICK_DITDH_GUIDE if run.quick else None))  # fmt: skip

    # RAE.decode with the ViT-XL decoder built as RAE.__init__ builds it (its encoder, which only encode needs,
    # and its hub downloads are left out); normalisation statistics of the latent's shape
    raw = json.loads((root / RAE_DECODER_CONFIG).read_text())
    raw.update(hidden_size=latent[0], patch_size=16, image_size=16 * latent[1])
    raw.update(QUICK_RAE_DECODER if run.quick else {})
    dec_config = ViTMAEConfig(**{k_: v for k_, v in raw.items() if not k_.startswith("_") and k_ != "architectures"})
    rae = RAE.__new__(RAE)
    torch.nn.Module.__init__(rae)
    with torch.device(dev):
        rae.decoder = GeneralDecoder(dec_config, num_patches=latent[1] * latent[2]).eval()
    rae.encoder_mean = torch.tensor(IMAGENET_MEAN, device=dev).view(1, 3, 1, 1)
    rae.encoder_std = torch.tensor(IMAGENET_STD, device=dev).view(1, 3, 1, 1)
    rae.do_normalization, rae.reshape_to_2d, rae.eps = True, True, 1e-5
    rae.latent_mean = torch.zeros(latent, device=dev)
    rae.latent_var = torch.ones(latent, device=dev)
    codec = _rae_codec(run)

    transport = create_transport(**cfg["transport"]["params"], time_dist_shift=shift)
    sample_fn = Sampler(transport).sample_ode(**{**sampler_params, "num_steps": k + 1})
    n = run.batches[key]["official"]
    counted_main, counted_guide = Counter(main.forward_with_autoguidance), Counter(guide.forward)

    def official_call(model_fn=main.forward_with_autoguidance, guide_fn=guide.forward):
        with torch.no_grad(), official_tf32():
            z = torch.randn(n, *latent, device=dev)
            y = torch.randint(0, misc["num_classes"], (n,), device=dev)
            z = torch.cat([z, z], dim=0)
            y = torch.cat([y, torch.full((n,), null_label, device=dev)], dim=0)
            kwargs = dict(y=y, cfg_scale=scale, cfg_interval=interval, additional_model_forward=guide_fn)
            samples = sample_fn(z, model_fn, **kwargs)[-1]
            samples, _ = samples.chunk(2, dim=0)
        return samples

    def official_decode(z):
        with torch.no_grad(), official_tf32():
            samples = rae.decode(z).clamp(0, 1)
            return samples.mul(255).permute(0, 2, 3, 1).to("cpu", dtype=torch.uint8)

    def official_measure() -> dict[str, Any]:
        official_call(counted_main, counted_guide)
        timing = time_steps(official_call, run.policy, device=dev, deadline=run.deadline)
        z = torch.randn(n, *latent, device=dev)
        dec = time_steps(lambda: official_decode(z), run.decode_policy, device=dev, deadline=run.deadline)
        calls = {"main": counted_main.calls / k, "guide": counted_guide.calls / k, "rows_per_call": 2 * n}
        return {**sampling_fields(timing, dec, n, k, full_steps), "network_calls_per_step": calls}

    for path in sampling_paths(run):
        if path == "official":
            base = record.common("official", n, "tf32", False, attention="RAE NormAttention (its default)",
                                 sampler=f"stage2.transport.Sampler.sample_ode euler, {full_steps} steps",
                                 full_steps=full_steps, model_fn="DiTwDDTHead.forward_with_autoguidance",
                                 decoder="stage1.RAE.decode (ViT-XL GeneralDecoder)")  # fmt: skip
            guarded(run, record, base, official_measure)
        else:
            ours_sampling(run, record, key, path, "rae-256-cfg", "rae-dith-xl-256", ours_main, ours_guide, codec,
                          steps=k + 1, steps_per_call=k, full_steps=full_steps)  # fmt: skip
    record.finish()


CASE_FUNCTIONS = {"sit-sde": case_sit_sde, "train-sit": case_train_sit, "train-rae": case_train_rae,
                  "rae-ag": case_rae_ag}  # fmt: skip


def summary(out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="official code vs mixflow-bench (bench_official.py)")
    for col in ("case", "path", "batch", "precision", "img/s", "range", "x official", "spread", "status"):
        table.add_column(col)
    for file in sorted(out.glob("official-*.json")):
        data = json.loads(file.read_text())
        for r in data["rows"]:
            ok = r.get("status") == "ok"
            table.add_row(
                data["key"], r["path"], str(r["batch"]), f"{r['precision']}{' +compile' if r['compile'] else ''}",
                f"{r['images_per_s']:.3f}" if ok else "-",
                "{:.3f}-{:.3f}".format(*r["images_per_s_range"]) if ok else "-",
                (f"{r['ratio_vs_official']:.2f}x" + ("" if r.get("ratio_stable", True) else " (unstable)"))
                if "ratio_vs_official" in r else "",
                f"{r['timing']['spread']:.1%}" if ok else "", r.get("status", ""),
            )  # fmt: skip
    Console(width=160).print(table)


def parse_cases(text: str) -> list[str]:
    wanted = list(CASES) if text == "all" else [c.strip() for c in text.split(",") if c.strip()]
    unknown = sorted(set(wanted) - set(CASES))
    if unknown:
        raise SystemExit(f"unknown case(s) {unknown}; choose from {list(CASES)} or 'all'")
    return [c for c in CASES if c in wanted]  # the fixed order: most important first


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", default="all", help=f"comma-separated cases of {list(CASES)}, or all")
    parser.add_argument("--official-root", type=Path, default=DEFAULT_OFFICIAL_ROOT,
                        help="folder holding the SiT/ and RAE/ checkouts")  # fmt: skip
    parser.add_argument("--out", type=Path, default=Path("runs/bench_official"), help="folder for the JSON files")
    parser.add_argument("--quick", action="store_true", help="tiny models, a few steps: a smoke run (CPU is fine)")
    parser.add_argument("--budget-s", type=float, default=None, help="stop timing after this many seconds")
    parser.add_argument("--call-steps", type=int, default=None,
                        help="sampler steps per timed call (default: 2 for SiT's SDE, its minimum; 1 for RAE)",
                        )  # fmt: skip
    parser.add_argument("--batch", action="append", default=[], metavar="CASE:PATH=N",
                        help="override a batch size, e.g. train-rae:official=64")  # fmt: skip
    parser.add_argument("--device", default=None)
    parser.add_argument("--fp8", action="store_true",
                        help="sit-sde, rae-ag: also time fast-fp8, the fast path with FP8 linears (opt-in; CUDA "
                             "capability 8.9+, skipped with a note elsewhere)")  # fmt: skip
    args = parser.parse_args(argv)
    cases = parse_cases(args.case)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    batches = {c: ({p: 2 for p in b} if args.quick else dict(b)) for c, b in BATCHES.items()}
    for item in args.batch:
        where, value = item.split("=")
        case, path = where.split(":")
        batches[case][path] = int(value)
    if args.fp8:  # batch like fast unless --batch CASE:fast-fp8=N says otherwise
        for case in ("sit-sde", "rae-ag"):
            batches[case].setdefault(FP8_PATH, batches[case]["fast"])
    run = Run(
        device=device,
        quick=args.quick,
        official_root=args.official_root.resolve(),
        out=args.out,
        sit_call_steps=max(args.call_steps or 2, 2),
        rae_call_steps=args.call_steps or 1,
        batches=batches,
        policy=QUICK_POLICY if args.quick else DEFAULT_POLICY,
        decode_policy=QUICK_DECODE_POLICY if args.quick else DECODE_POLICY,
        env=environment(device),
        fp8=args.fp8,
    )
    if args.budget_s is not None:
        run.deadline = run.start + args.budget_s
    missing = sorted({PEER_OF[c] for c in cases if not present(PEER_OF[c], run.official_root)})
    if missing:
        raise SystemExit(f"official checkouts missing under {run.official_root}: {missing} "
                         "(tools/parity/checkout_official.py makes them)")  # fmt: skip
    run.log(f"{run.env['gpu']}, torch {run.env['torch']}, cases {cases}, out {run.out}")
    for case in cases:
        if run.stopped:
            run.log(f"{case}: skipped (time budget used up)")
            continue
        CASE_FUNCTIONS[case](run)
        gc.collect()
        torch._dynamo.reset()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    summary(run.out)
    return 1 if run.failed else 0


if __name__ == "__main__":
    sys.exit(main())
