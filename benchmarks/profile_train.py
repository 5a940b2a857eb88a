"""Where a MixFlow post-training step spends its GPU time: kernel categories and the fraction of the FLOP limit.

The step is ``bench_train.py``'s (objective draw, loss, backward, clip 1.0, AdamW, EMA) on random weights. For each
path (``eager-bf16``: bf16 autocast without compile; ``fast``: bf16 + ``torch.compile``, as ``--fast`` trains) it
counts the step's FLOPs with ``torch.utils.flop_counter`` (matmuls and attention, forward + backward), times
``--steps`` steps, and profiles them with ``torch.profiler``, summing the device time of every kernel into
categories (matmul, attention, fused elementwise from Triton, optimizer, other). Prints the shares and writes
``--out`` (JSON) after each path, so a command cut short keeps what it finished.

    python benchmarks/profile_train.py --case rae --out $OUT/profile_train.json      # on one GPU, about 2 minutes
    python benchmarks/profile_train.py --case rae --smoke                             # small model on the CPU
"""

from __future__ import annotations

import argparse
import json
import re
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import torch
from _common import sync
from bench_train import build_case, make_step

BF16_DENSE_TFLOPS = {"H200": 790.0, "H100": 790.0}  # measured 8192^3 bf16 matmul rate on this machine kind
CATEGORIES = (  # first match wins; kernel names as CUDA reports them
    # Inductor names its kernels after every op it fused: "triton_poi_fused__scaled_dot_product_cudnn_attention_.."
    # is the rotary/layout kernel before attention, not attention; "triton_tem_" kernels are its GEMM templates
    ("matmul", re.compile(r"^triton_tem_", re.I)),
    ("fused elementwise (Triton)", re.compile(r"^triton_", re.I)),
    ("attention", re.compile(r"flash|fmha|attention|sdpa|cudnn.*(mha|attn)", re.I)),
    ("matmul", re.compile(r"gemm|nvjet|cutlass|sm90_xmma|matmul|_mm_|wgmma|^aten::(mm|addmm|bmm)$", re.I)),
    ("optimizer + EMA", re.compile(r"adam|multi_tensor|foreach|lerp", re.I)),
    ("reduction / norm", re.compile(r"reduce|norm|softmax", re.I)),
)


# ranges that torch's profiler also reports on the GPU timeline (e.g. "Optimizer.step#AdamW.step")
USER_RANGES = ("Optimizer.", "ProfilerStep#")


def categorize(name: str) -> str:
    for label, pattern in CATEGORIES:
        if pattern.search(name):
            return label
    return "other elementwise / copies"


def step_flops(step) -> int:
    """Matmul + attention FLOPs of one step (forward and backward), counted by torch's flop counter."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        step()
    return counter.get_total_flops()


@dataclass
class KernelProfile:
    """One timed and profiled loop: wall time per step and the device time of its kernels, per step."""

    warmup_s: float
    s_per_step: float
    categories_us: dict[str, float]
    kernels_us: dict[str, float]

    def fields(self, per: str = "step") -> dict:
        """The JSON fields of the profile: busy time, busy fraction, categories and the 15 longest kernels (ms)."""
        busy_us = sum(self.categories_us.values())
        top = sorted(self.kernels_us.items(), key=lambda kv: -kv[1])[:15]
        return {
            f"kernel_time_per_{per}_ms": busy_us / 1e3, "gpu_busy_fraction": busy_us / 1e6 / self.s_per_step,
            "categories_ms": {k: v / 1e3 for k, v in sorted(self.categories_us.items(), key=lambda kv: -kv[1])},
            "top_kernels_ms": {k[:120]: v / 1e3 for k, v in top},
        }  # fmt: skip


def profile_loop(step, steps: int, device: torch.device, category=categorize, warmup: int = 3) -> KernelProfile:
    """Run ``step`` ``warmup`` times (compilation, autotuning), time ``steps`` steps, then profile ``steps`` more
    with ``torch.profiler`` and sum each kernel's device time (CPU self time on a CPU) per ``category``."""
    start = time.perf_counter()
    for _ in range(warmup):
        step()
    sync()
    warmup_s = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    s_per_step = (time.perf_counter() - start) / steps
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        for _ in range(steps):
            step()
        sync()
    per_category: dict[str, float] = defaultdict(float)
    per_kernel: dict[str, float] = defaultdict(float)
    for event in prof.events():
        if device.type == "cuda" and event.device_type != torch.autograd.DeviceType.CUDA:
            continue
        if device.type != "cuda" and (event.device_type != torch.autograd.DeviceType.CPU or event.cpu_parent):
            continue
        if event.name.startswith(USER_RANGES):  # a range over kernels, not a kernel: counting it counts them twice
            continue
        us = event.device_time if device.type == "cuda" else event.self_cpu_time_total
        per_category[category(event.name)] += us / steps
        per_kernel[event.name] += us / steps
    return KernelProfile(warmup_s, s_per_step, dict(per_category), dict(per_kernel))


def profile_path(case: str, path: str, batch: int, steps: int, smoke: bool, device: torch.device) -> dict:
    model, obj, shape, label = build_case(case, smoke)
    model = model.to(device).train()
    # eager-bf16: the fast step without torch.compile (what the compiler has to improve on)
    step = make_step(model, obj, shape, batch, fast=True, device=device, compile_model=path == "fast")
    profile = profile_loop(step, steps, device)
    row = {
        "case": label, "path": path, "batch": batch, "device": _device_name(device), "torch": torch.__version__,
        "warmup_s": profile.warmup_s, "s_per_step": profile.s_per_step, "images_per_s": batch / profile.s_per_step,
        **profile.fields(),
    }  # fmt: skip
    # FLOPs of the same step run eagerly on a few rows (the counter sees aten ops, which a compiled graph hides;
    # every counted op is linear in the batch)
    count_batch = min(batch, 8)
    flops = step_flops(make_step(model, obj, shape, count_batch, fast=True, device=device, compile_model=False))
    row["flops_per_image"] = flops / count_batch
    row["flops_per_step"] = row["flops_per_image"] * batch
    del model, step
    return row


def _device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name() if device.type == "cuda" else "cpu"


def attach_flop_rate(rows: list[dict]) -> None:
    """The TFLOP/s and the fraction of the bf16 dense limit of every row, from its FLOP count."""
    limit = next((v for k, v in BF16_DENSE_TFLOPS.items() if k in rows[0]["device"]), None)
    for r in rows:
        if "flops_per_image" not in r:
            continue
        r["tflops"] = r["flops_per_image"] * r["images_per_s"] / 1e12
        if limit:
            r["fraction_of_bf16_limit"] = r["tflops"] / limit


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", default="rae", choices=("rae", "sit"))
    parser.add_argument("--paths", default="eager-bf16,fast")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--smoke", action="store_true", help="the small model (a check of the script on the CPU)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu":
        args.batch, args.steps = min(args.batch, 2), min(args.steps, 2)
    rows: list[dict] = []
    for path in args.paths.split(","):
        if path not in ("eager-bf16", "fast"):
            raise SystemExit(f"unknown path {path!r} (eager-bf16, fast)")
        rows.append(profile_path(args.case, path, args.batch, args.steps, args.smoke, device))
        attach_flop_rate(rows)
        r = rows[-1]
        print(f"{r['case']} {path}: {r['images_per_s']:.1f} img/s, kernels {r['kernel_time_per_step_ms']:.1f} ms of "
              f"{r['s_per_step'] * 1e3:.1f} ms per step" + (f", {r['tflops']:.0f} TFLOP/s" if "tflops" in r else ""),
              flush=True)  # fmt: skip
        for name, ms in r["categories_ms"].items():
            print(f"    {name:30s} {ms:8.2f} ms  {ms / r['kernel_time_per_step_ms']:6.1%}", flush=True)
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps({"rows": rows}, indent=2) + "\n")
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
