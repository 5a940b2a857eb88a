"""Where one guided sampling call spends its GPU time, per path, and what fraction of the matmul limit it reaches.

``--case sit`` (default): one guided model evaluation of ``sit-sde --fast``'s batch: 256 images with CFG, i.e. 512
rows of SiT-XL/2 at 256 px. ``--case rae256``: one autoguided evaluation of the RAE recipes' fast batch, DiT^DH-XL
and its DiT^DH-S guide on 256 rows each (no null half); there an "evaluation" is one row through both models.
Random weights. Paths: ``eager-bf16`` (bf16 autocast, no compile), ``fast`` (bf16 +
``torch.compile``, as ``sample --fast``) and ``fast-fp8`` (``--fast --fp8``: the linears as FP8 matmuls). For each
it times ``--calls`` calls after warm-up, profiles them with ``torch.profiler`` and sums kernel time into
categories (FP8 matmul, matmul, attention, fused elementwise from Triton, ...). The FLOPs of a call are counted
once with ``torch.utils.flop_counter`` on the eager path; the limits are measured in the same run as the rate of
one 8192^3 matmul in bf16 and in FP8 (``torch._scaled_mm``, row-wise scales), so each path's fraction of its own
limit is stated beside its rate.

    python benchmarks/profile_sampling.py --out $OUT/profile_sampling.json      # one GPU, about 2 minutes
    python benchmarks/profile_sampling.py --case rae256 --out $OUT/profile_sampling_rae.json
    python benchmarks/profile_sampling.py --smoke                                # SiT-S/2 on the CPU, a check
"""

from __future__ import annotations

import argparse
import json
import os
import re
import time
from pathlib import Path

import torch
from _common import sync
from profile_train import categorize, profile_loop, step_flops

from mixflow_bench.models.float8 import float8_unsupported_reason
from mixflow_bench.models.zoo import build_model, get_spec
from mixflow_bench.sampling.fast import FastPath, prepare_model
from mixflow_bench.sampling.velocity import precision_context

PATHS = {
    "eager-bf16": FastPath(precision="bf16", attention="sdpa", compile=False),
    "fast": FastPath(precision="bf16", attention="sdpa", compile=True),
    "fast-fp8": FastPath(precision="fp8", attention="sdpa", compile=True),
}
# case -> (model, guide or None, rows of one call on the GPU); --smoke swaps in the small models
CASES = {
    "sit": ("sit-xl-2", None, 512),
    "rae256": ("rae-dith-xl-256", "rae-dith-s-256", 256),
}
SMOKE_MODELS = {"sit-xl-2": "sit-s-2", "rae-dith-xl-256": "rae-dith-s-256"}
FP8_MATMUL = re.compile(r"e4m3|e5m2|f8f8|fp8|float8|nvjet_\w*_qq", re.I)  # cuBLAS names FP8 GEMMs nvjet_..._qq..
FP8_QUANTISE = re.compile(r"amax|_scaled_mm", re.I)  # Inductor kernels that compute an FP8 linear's input scales


def sampling_category(name: str) -> str:
    """profile_train's categories, with FP8 matmuls and the Triton kernels that quantise their inputs counted apart."""
    triton = name.lower().startswith("triton_")
    if triton and FP8_QUANTISE.search(name):
        return "fp8 quantise + fused elementwise (Triton)"
    if not triton and FP8_MATMUL.search(name):
        return "fp8 matmul"
    return categorize(name)


def matmul_limit_tflops(dtype: str, device: torch.device, n: int = 8192, reps: int = 20) -> float:
    """The measured rate of one n^3 matmul: bf16 ``@`` or FP8 ``_scaled_mm`` with row-wise scales, bf16 out."""
    a = torch.randn(n, n, device=device)
    if dtype == "bf16":
        x, w = a.bfloat16(), a.bfloat16().t()

        def run():
            return x @ w
    else:
        x, w = a.to(torch.float8_e4m3fn), a.to(torch.float8_e4m3fn).t()
        sa, sb = torch.ones(n, 1, device=device), torch.ones(1, n, device=device)

        def run():
            return torch._scaled_mm(x, w, scale_a=sa, scale_b=sb, out_dtype=torch.bfloat16)

    for _ in range(3):
        run()
    sync()
    start = time.perf_counter()
    for _ in range(reps):
        run()
    sync()
    return 2 * n**3 * reps / (time.perf_counter() - start) / 1e12


def profile_path(
    name: str, bases: list[torch.nn.Module], shape: tuple[int, ...], batch: int, calls: int, device: torch.device
) -> dict:
    """Profile one call of every model in ``bases`` (the model, then its guide) on the same inputs."""
    fast = PATHS[name]
    models = [prepare_model(base, fast) for base in bases]
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(batch, *shape, device=device, generator=g)
    t = torch.rand(batch, device=device, generator=g)
    y = torch.randint(0, 1000, (batch,), device=device, generator=g)

    def call():
        with torch.no_grad(), precision_context(fast.precision, device):
            return [model(x, t, y) for model in models]

    profile = profile_loop(call, calls, device, sampling_category)
    row = {
        "path": name, "precision": fast.precision, "compile": fast.compile, "rows": batch,
        "warmup_s": profile.warmup_s, "ms_per_call": profile.s_per_step * 1e3,
        "evaluations_per_s": batch / profile.s_per_step, **profile.fields("call"),
    }  # fmt: skip
    flops = step_flops(call) if name == "eager-bf16" else None
    if flops is not None:
        row["flops_per_evaluation"] = flops / batch
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", choices=list(CASES), default="sit")
    parser.add_argument("--paths", default="eager-bf16,fast,fast-fp8")
    parser.add_argument("--rows", type=int, default=None, help="model batch (default: the case's fast batch)")
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--smoke", action="store_true", help="SiT-S/2 (a check of the script on the CPU)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model_name, guide_name, rows = CASES[args.case]
    args.rows = args.rows or rows
    if device.type == "cpu":
        args.rows, args.calls = min(args.rows, 4), min(args.calls, 2)
    if args.smoke or device.type == "cpu":
        model_name = SMOKE_MODELS[model_name]
    names = [model_name] + ([guide_name] if guide_name else [])
    bases = [build_model(n).to(device).eval() for n in names]
    shape = tuple(get_spec(model_name).latent_shape)
    with torch.no_grad():
        for base in bases:  # random weights: the zero-initialised adaLN would skip most of the network
            for p in base.parameters():
                p.normal_(0, 0.02)
    result: dict = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "case": args.case,
        "model": model_name,
        "guide": guide_name,
        "inductor_env": {k: v for k, v in os.environ.items() if k.startswith("TORCHINDUCTOR_")},
        "rows": [],
    }
    if device.type == "cuda":
        result["limit_tflops"] = {"bf16": matmul_limit_tflops("bf16", device)}
        if float8_unsupported_reason(device) is None:
            result["limit_tflops"]["fp8"] = matmul_limit_tflops("fp8", device)
        print(f"matmul limits (8192^3, measured): {result['limit_tflops']}", flush=True)
    flops = None
    for name in args.paths.split(","):
        if name not in PATHS:
            raise SystemExit(f"unknown path {name!r} ({', '.join(PATHS)})")
        if PATHS[name].precision == "fp8" and (reason := float8_unsupported_reason(device)) is not None:
            print(f"{name}: skipped ({reason})", flush=True)
            continue
        row = profile_path(name, bases, shape, args.rows, args.calls, device)
        flops = row.get("flops_per_evaluation", flops)
        if flops is not None:
            row["tflops"] = flops * row["evaluations_per_s"] / 1e12
            limits = result.get("limit_tflops", {})
            key = "fp8" if row["precision"] == "fp8" else "bf16"
            if key in limits:
                row[f"fraction_of_{key}_limit"] = row["tflops"] / limits[key]
            if "bf16" in limits:
                row["fraction_of_bf16_limit"] = row["tflops"] / limits["bf16"]
        result["rows"].append(row)
        print(f"{name}: {row['evaluations_per_s']:.0f} evaluations/s, {row['ms_per_call']:.2f} ms per call "
              f"(kernels {row['kernel_time_per_call_ms']:.2f} ms)"
              + (f", {row['tflops']:.0f} TFLOP/s" if "tflops" in row else ""), flush=True)  # fmt: skip
        for cat, ms in row["categories_ms"].items():
            print(f"    {cat:30s} {ms:8.3f} ms  {ms / row['kernel_time_per_call_ms']:6.1%}", flush=True)
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(result, indent=2) + "\n")
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
