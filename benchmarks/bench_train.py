"""One MixFlow post-training step: the official-equivalent path against the fast path, in one run.

The "official" path here is an emulation: this project's code run at the official settings (labelled so in the
table and the JSON). ``bench_official.py`` times the official training code itself, with stable timing.

Models (random weights): SiT-XL/2 at 256 (MixFlow gamma 0.8, data-ward time) and RAE's DiT^DH-XL at 256
(gamma 0.4, noise-ward time with the sqrt(48) shift). A step is: draw the objective's randomness, the loss, the
backward pass, gradient clipping at 1.0, AdamW, the EMA update.

* official-equivalent: fp32 with TF32 matmuls, eager, AdamW's default multi-tensor kernel, a Python loop over
  parameters for the EMA (as the official train.py files do);
* fast: bf16 autocast, fused AdamW, multi-tensor EMA, ``torch.compile`` of the model.

Prints images/s, peak device memory and the fast/official ratio (rich table); ``--json`` saves the rows.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from _common import randomize, sync
from rich.console import Console
from rich.table import Table

from mixflow_bench.flow import Path, TimeConvention, mixflow, rae_shift_factor
from mixflow_bench.models.zoo import build_model
from mixflow_bench.train.ema import create_ema, update_ema

console = Console()
# the "official" rows of this script: this project's code run at the official settings
EMULATION = "emulation of the official settings in this project's code, not the official code (see bench_official.py)"


def make_step(model, objective, shape, batch, fast: bool, device, compile_model: bool | None = None):
    """One training step; ``fast`` = bf16 autocast, fused AdamW, multi-tensor EMA and (unless ``compile_model`` is
    False) ``torch.compile`` on CUDA."""
    compile_model = fast if compile_model is None else compile_model
    ema = create_ema(model)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0, fused=fast and device.type == "cuda")
    net = torch.compile(model) if compile_model and device.type == "cuda" else model
    g = torch.Generator().manual_seed(0)
    x1 = torch.randn(batch, *shape, generator=g).to(device)
    y = torch.randint(1000, (batch,), generator=g).to(device)
    ema_params = dict(ema.named_parameters())
    draws = torch.Generator(device=device).manual_seed(0)  # on the device, as the engine and the official code draw

    def step():
        rnd = objective.draw(batch, shape, draws)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=fast):
            loss = objective.loss(net, x1, y, rnd).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0, foreach=True)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if fast:
            update_ema(ema, model, 0.9999)
        else:
            with torch.no_grad():
                for name, p in model.named_parameters():
                    ema_params[name].mul_(0.9999).add_(p.detach(), alpha=1 - 0.9999)
        return loss

    return step


def build_case(case: str, smoke: bool = False):
    """(random-weight model on the CPU, MixFlow objective, latent shape, label) of case ``sit`` or ``rae``."""
    if case == "sit":
        model = randomize(build_model("sit-s-2" if smoke else "sit-xl-2"))
        obj = mixflow(Path("linear", TimeConvention.DATA_AT_1), gamma=0.8, label_dropout=0.1)
        return model, obj, (4, 32, 32), "SiT-XL/2 256, MixFlow gamma 0.8"
    model = randomize(build_model("rae-dith-s-256" if smoke else "rae-dith-xl-256"))
    obj = mixflow(Path("linear", TimeConvention.DATA_AT_0), gamma=0.4, time_shift=rae_shift_factor(768, 16, 16),
                  label_dropout=0.1)  # fmt: skip
    return model, obj, (768, 16, 16), "DiT^DH-XL 256, MixFlow gamma 0.4"


def bench(name: str, device, batches: dict[str, int], steps: int, smoke: bool = False) -> list[dict]:
    rows = []
    for path in ("official", "fast"):
        model, obj, shape, label = build_case(name, smoke)
        model = model.to(device)
        model.train()
        batch = batches[path]
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        step = make_step(model, obj, shape, batch, path == "fast", device)
        for _ in range(3):
            step()
        sync()
        start = time.perf_counter()
        for _ in range(steps):
            loss = step()
        sync()
        dt = (time.perf_counter() - start) / steps
        rows.append(
            {
                "case": label,
                "path": path,
                "implementation": EMULATION if path == "official" else "mixflow-bench",
                "batch": batch,
                "s_per_step": dt,
                "images_per_s": batch / dt,
                "loss": float(loss),
                "peak_mem_gb": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None,
            }
        )
        del model, step
        if device.type == "cuda":
            torch.cuda.empty_cache()
    rows[1]["ratio"] = rows[1]["images_per_s"] / rows[0]["images_per_s"]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default="sit,rae")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--official-batch", type=int, default=32)
    parser.add_argument("--fast-batch", type=int, default=64)
    parser.add_argument("--json", default=None)
    parser.add_argument("--smoke", action="store_true", help="small models instead of XL (a quick check of the script)")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    batches = {"official": args.official_batch, "fast": args.fast_batch}
    if device.type == "cpu":
        batches = {"official": 2, "fast": 2}
        args.steps = min(args.steps, 2)
    rows = []
    for case in args.cases.split(","):
        rows += bench(case, device, batches, args.steps, args.smoke)
        console.print(rows[-2:])
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    table = Table(title=f"MixFlow post-training step on {name} (torch {torch.__version__})")
    for col in ("case", "path", "batch", "s/step", "images/s", "peak GiB", "ratio"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            r["case"],
            r["path"] + (" (emulation)" if r["path"] == "official" else ""),
            str(r["batch"]),
            f"{r['s_per_step']:.4f}",
            f"{r['images_per_s']:.1f}",
            f"{r['peak_mem_gb']:.1f}" if r["peak_mem_gb"] else "-",
            f"{r['ratio']:.2f}x" if "ratio" in r else "1.00x",
        )
    console.print(table)
    if args.json:
        with open(args.json, "w") as f:
            data = {"device": name, "torch": torch.__version__, "official_rows": EMULATION, "rows": rows}
            json.dump(data, f, indent=2)


if __name__ == "__main__":
    main()
