"""Sampling throughput: the official-equivalent path against the fast path, on one device, in one run.

Cases (random weights of the real architectures, so it runs offline):

* ``sit``: SiT-XL/2 at 256, SDE Euler-Maruyama 250 steps, CFG 1.5 on 3 channels, SD-VAE decode.
  Official-equivalent: fp32 with TF32 matmuls, eager, the official per-GPU batch of 4 (doubled by CFG).
* ``rae256`` / ``rae512``: DiT^DH-XL with DiT^DH-S autoguidance, 50-point shifted Euler grid (49 steps),
  ViT-XL decode. Official-equivalent: fp32/TF32, eager, batch 125, both models run on a doubled batch whose
  null-label half is discarded, eager softmax attention in the decoder.

Each path runs a few sampler steps after warm-up (timed with device synchronisation); the per-step time is
extrapolated to the full step count and the decode time per image is added. ``--fidelity`` also runs both
paths over the *whole* trajectory on the same noise and reports the relative L2 distance of the final latents.
Prints a rich table with images/s and the fast/official ratio; ``--json`` saves it.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass

import torch
from _common import randomize, sync
from rich.console import Console
from rich.table import Table

from mixflow_bench.flow import Path, TimeConvention, autoguidance, classifier_free, euler, euler_maruyama, rae_grid
from mixflow_bench.flow.conventions import rae_shift_factor
from mixflow_bench.models.autoencoders import build_codec
from mixflow_bench.models.zoo import build_model
from mixflow_bench.sampling.fast import FastPath, prepare_model
from mixflow_bench.sampling.velocity import precision_context

console = Console()


@dataclass
class Case:
    name: str
    steps: int  # model evaluations per image in the full sampler
    official_batch: int
    fast_batch: int


def official_autoguidance(model, guide, y, scale, null_label=1000):
    """RAE's official batch layout: both models see [y, null] and the null half is thrown away."""
    y2 = torch.cat([y, torch.full_like(y, null_label)])

    def velocity(x, t):
        xx, tt = torch.cat([x, x]), torch.cat([t, t])
        main = model(xx, tt, y2)[: len(x)]
        ag = guide(xx, tt, y2)[: len(x)]
        return ag + scale * (main - ag)

    return velocity


def run_sit(model, codec, batch, fast: FastPath, steps, device, seed=0, decode=True):
    g = torch.Generator(device="cpu").manual_seed(seed)
    x = torch.randn(batch, 4, 32, 32, generator=g).to(device)
    y = torch.randint(1000, (batch,), generator=g).to(device)
    step_noise = [torch.randn(batch, 4, 32, 32, generator=g).to(device) for _ in range(steps)]
    v = classifier_free(model, y, 1.5, channels=3)
    with precision_context(fast.precision, device):
        z = euler_maruyama(v, x, Path("linear", TimeConvention.DATA_AT_1), steps=steps, noise=lambda i: step_noise[i])
        img = codec.decode(z.float()) if decode else None
    return z.float(), img


def run_rae(model, guide, codec, batch, fast: FastPath, steps, device, official: bool, seed=0, decode=True):
    c, h, w = codec.latent_shape
    g = torch.Generator(device="cpu").manual_seed(seed)
    x = torch.randn(batch, c, h, w, generator=g).to(device)
    y = torch.randint(1000, (batch,), generator=g).to(device)
    scale = 1.42 if h == 16 else 1.5
    v = official_autoguidance(model, guide, y, scale) if official else autoguidance(model, guide, y, scale)
    grid = rae_grid(50, rae_shift_factor(c, h, w))[: steps + 1]
    with precision_context(fast.precision, device):
        z = euler(v, x, grid)
        img = codec.decode(z.float()) if decode else None
    return z.float(), img


def timed(fn, repeats=1) -> float:
    sync()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    sync()
    return (time.perf_counter() - start) / repeats


def bench_case(
    case: str, device, timed_steps: int, fidelity: bool, compile_mode: str, smoke: bool = False
) -> list[dict]:
    rows = []
    official = FastPath.reference()
    fast = FastPath(precision="bf16", attention="sdpa", compile=device.type == "cuda", compile_mode=compile_mode)
    exact = FastPath(precision="fp32", attention="sdpa", compile=False)
    paths = {"official": official, "fast": fast, "fp32": exact}
    if case == "sit":
        spec = Case("SiT-XL/2 256, SDE-250, CFG 1.5", 250, 4, 256 if device.type == "cuda" else 2)
        base = randomize(build_model("sit-s-2" if smoke else "sit-xl-2")).to(device)
        codec = build_codec("sd-vae-ft-ema", 256, random_init=True, device=device)
        models = {"official": prepare_model(base, official), "fast": prepare_model(base, fast)}
        models["fp32"] = models["official"]

        def run(path, batch, steps, decode=True):
            return run_sit(models[path], codec, batch, paths[path], steps, device, decode=decode)
    else:
        res = 256 if case == "rae256" else 512
        spec = Case(
            f"RAE DiT^DH-XL {res}, Euler-49, AG {1.42 if res == 256 else 1.5}",
            49,
            125,
            (256 if res == 256 else 64) if device.type == "cuda" else 2,
        )
        if device.type != "cuda":
            spec.official_batch = 2
        main = randomize(build_model(f"rae-dith-{'s' if smoke else 'xl'}-{res}")).to(device)
        guide = randomize(build_model(f"rae-dith-s-{res}")).to(device)
        codec = build_codec("rae-dinov2-b", res, random_init=True, device=device)
        codec.decoder.set_attention("math")
        decoders = {"official": codec}
        models = {
            "official": (prepare_model(main, official), prepare_model(guide, official)),
            "fast": (prepare_model(main, fast), prepare_model(guide, fast)),
        }
        models["fp32"] = models["official"]

        def run(path, batch, steps, decode=True):
            m, gd = models[path]
            codec.decoder.set_attention("sdpa" if path == "fast" else "math")
            return run_rae(
                m,
                gd,
                decoders["official"],
                batch,
                paths[path],
                steps,
                device,
                official=path == "official",
                decode=decode,
            )

    for path in ("official", "fast"):
        batch = spec.official_batch if path == "official" else spec.fast_batch
        run(path, batch, 2)  # warm-up: compilation, cuDNN/cuBLAS handles
        t_steps = timed(lambda: run(path, batch, timed_steps, decode=False))  # noqa: B023
        t_base = timed(lambda: run(path, batch, 2, decode=False))  # noqa: B023
        per_step = (t_steps - t_base) / max(timed_steps - 2, 1)
        t_dec = timed(lambda: run(path, batch, 2, decode=True)) - t_base  # noqa: B023
        total = per_step * spec.steps + max(t_dec, 0.0)
        rows.append(
            {
                "case": spec.name,
                "path": path,
                "batch": batch,
                "precision": (official if path == "official" else fast).precision,
                "compile": path == "fast" and fast.compile,
                "s_per_step": per_step,
                "decode_s": t_dec,
                "images_per_s": batch / total,
                "model_evals_per_s": batch * (2 if case == "sit" else 1) / per_step,
            }
        )
        if device.type == "cuda":
            rows[-1]["peak_mem_gb"] = torch.cuda.max_memory_allocated() / 2**30
            torch.cuda.reset_peak_memory_stats()
    rows[1]["ratio"] = rows[1]["images_per_s"] / rows[0]["images_per_s"]

    if fidelity:
        n = 16 if device.type == "cuda" else 2
        z_ref, _ = run("fp32", n, spec.steps, decode=False)
        for i, path in enumerate(("official", "fast")):
            z, _ = run(path, n, spec.steps, decode=False)
            rel = ((z - z_ref).flatten(1).norm(dim=1) / z_ref.flatten(1).norm(dim=1)).cpu()
            rows[i]["fidelity_rel_l2"] = {
                "median": float(rel.median()),
                "p95": float(rel.quantile(0.95)),
                "max": float(rel.max()),
                "n": n,
                "reference": "fp32 eager",
            }
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default="sit,rae256,rae512")
    parser.add_argument("--timed-steps", type=int, default=8)
    parser.add_argument("--fidelity", action="store_true")
    parser.add_argument("--compile-mode", default="default")
    parser.add_argument("--json", default=None)
    parser.add_argument("--smoke", action="store_true", help="small models instead of XL (a quick check of the script)")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    rows = []
    for case in args.cases.split(","):
        rows += bench_case(case, device, args.timed_steps, args.fidelity, args.compile_mode, args.smoke)
        torch.cuda.empty_cache() if device.type == "cuda" else None
        console.print(rows[-2:])
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    table = Table(title=f"Sampling throughput on {name} (torch {torch.__version__})")
    for col in ("case", "path", "batch", "precision", "s/step", "decode s", "images/s", "ratio", "fidelity rel-L2"):
        table.add_column(col)
    for r in rows:
        fid = r.get("fidelity_rel_l2")
        table.add_row(
            r["case"],
            r["path"],
            str(r["batch"]),
            r["precision"] + (" +compile" if r["compile"] else ""),
            f"{r['s_per_step']:.4f}",
            f"{r['decode_s']:.3f}",
            f"{r['images_per_s']:.3f}",
            f"{r['ratio']:.2f}x" if "ratio" in r else "1.00x",
            f"med {fid['median']:.2e} / max {fid['max']:.2e}" if fid else "",
        )
    console.print(table)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": name, "torch": torch.__version__, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
