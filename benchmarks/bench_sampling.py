"""Sampling throughput: the official-equivalent path against the fast path, on one device, in one run.

The "official" path here is an emulation: this project's code run at the official settings (labelled so in the
table and the JSON). ``bench_official.py`` times the official code itself.

Cases (random weights of the real architectures, so it runs offline):

* ``sit``: SiT-XL/2 at 256, SDE Euler-Maruyama 250 steps, CFG 1.5 on 3 channels, SD-VAE decode.
  Official-equivalent: fp32 with TF32 matmuls, eager, the official per-GPU batch of 4 (doubled by CFG).
* ``rae256`` / ``rae512``: DiT^DH-XL with DiT^DH-S autoguidance, 50-point shifted Euler grid (49 steps),
  ViT-XL decode. Official-equivalent: fp32/TF32, eager, batch 125, both models run on a doubled batch whose
  null-label half is discarded, eager softmax attention in the decoder.

Each path runs a few sampler steps after warm-up (timed with device synchronisation); the per-step time is
extrapolated to the full step count and the decode time per image is added. ``--fidelity`` also runs both
paths over the *whole* trajectory on the same noise and reports the relative L2 distance of the final latents.
``--fp8`` adds the opt-in ``fast-fp8`` path (the fast path with ``precision: fp8``, FP8 linears; a row with its
timing and, with ``--fidelity``, its distance to fp32); on a device without FP8 matmuls it is skipped with a note.
``--fidelity-only`` runs that comparison alone (no timing, so each path compiles once, for the comparison's batch).
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
from mixflow_bench.models.float8 import float8_unsupported_reason
from mixflow_bench.models.zoo import build_model
from mixflow_bench.sampling.fast import FastPath, prepare_model
from mixflow_bench.sampling.velocity import precision_context

console = Console()
# the "official" rows of this script: this project's code run at the official settings
EMULATION = "emulation of the official settings in this project's code, not the official code (see bench_official.py)"


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
    case: str,
    device,
    timed_steps: int,
    fidelity: bool,
    compile_mode: str,
    smoke: bool = False,
    graphs: bool = False,
    fp8: bool = False,
    timing: bool = True,
) -> list[dict]:
    rows = []
    official = FastPath.reference()
    on_gpu = device.type == "cuda"
    fast = FastPath(precision="bf16", attention="sdpa", compile=on_gpu, compile_mode=compile_mode)
    exact = FastPath(precision="fp32", attention="sdpa", compile=False)
    paths = {"official": official, "fast": fast, "fp32": exact}
    if graphs:  # the fast path with CUDA graphs of every model call (torch.compile mode reduce-overhead)
        paths["fast+graphs"] = FastPath(
            precision="bf16", attention="sdpa", compile=on_gpu, compile_mode="reduce-overhead"
        )
    if fp8:  # the fast path with FP8 linears (opt-in; CUDA compute capability 8.9 or newer)
        reason = float8_unsupported_reason(device)
        if reason is None:
            paths["fast-fp8"] = FastPath(precision="fp8", attention="sdpa", compile=on_gpu, compile_mode=compile_mode)
        else:
            console.print(f"{case} fast-fp8: skipped ({reason})", soft_wrap=True, highlight=False)
    if case == "sit":
        spec = Case("SiT-XL/2 256, SDE-250, CFG 1.5", 250, 4, 256 if device.type == "cuda" else 2)
        base = randomize(build_model("sit-s-2" if smoke else "sit-xl-2")).to(device)
        codec = build_codec("sd-vae-ft-ema", 256, random_init=True, device=device)
        models = {path: prepare_model(base, fp) for path, fp in paths.items() if path != "fp32"}
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
        models = {path: (prepare_model(main, fp), prepare_model(guide, fp)) for path, fp in paths.items()}
        models["fp32"] = models["official"]

        def run(path, batch, steps, decode=True):
            m, gd = models[path]
            codec.decoder.set_attention("math" if path == "official" else "sdpa")
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

    timed_paths = [p for p in paths if p != "fp32"]
    for path in timed_paths:
        batch = spec.official_batch if path == "official" else spec.fast_batch
        row = {
            "case": spec.name,
            "path": path,
            "implementation": EMULATION if path == "official" else "mixflow-bench",
            "batch": batch,
            "precision": paths[path].precision,
            "compile": paths[path].compile_mode if paths[path].compile else False,
        }
        rows.append(row)
        if not timing:
            continue
        run(path, batch, 2)  # warm-up: compilation, cuDNN/cuBLAS handles
        t_steps = timed(lambda: run(path, batch, timed_steps, decode=False))  # noqa: B023
        t_base = timed(lambda: run(path, batch, 2, decode=False))  # noqa: B023
        per_step = (t_steps - t_base) / max(timed_steps - 2, 1)
        t_dec = timed(lambda: run(path, batch, 2, decode=True)) - t_base  # noqa: B023
        total = per_step * spec.steps + max(t_dec, 0.0)
        row["s_per_step"] = per_step
        row["decode_s"] = t_dec
        row["images_per_s"] = batch / total
        row["model_evals_per_s"] = batch * (2 if case == "sit" else 1) / per_step
        if device.type == "cuda":
            row["peak_mem_gb"] = torch.cuda.max_memory_allocated() / 2**30
            torch.cuda.reset_peak_memory_stats()
    if timing:
        for row in rows[1:]:
            row["ratio"] = row["images_per_s"] / rows[0]["images_per_s"]

    if fidelity:
        n = 16 if device.type == "cuda" else 2
        z_ref, _ = run("fp32", n, spec.steps, decode=False)  # precision_context("fp32"): TF32 off
        for i, path in enumerate(timed_paths):
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


def pipeline_check(device, fast_row: dict, steps: int, smoke: bool = False) -> dict:
    """The real ``sample_to_npz`` + ``model_generator`` pipeline (per-sample CPU seeding, prefetched SDE noise,
    asynchronous image copies, npz shards) on the fast SiT settings with ``steps`` SDE steps, two batches, against
    the loop-only estimate ``2 * (s_per_step * steps + decode_s)`` from the fast row of the same run."""
    import tempfile

    from mixflow_bench.models.zoo import get_spec
    from mixflow_bench.recipes.schema import GuidanceSection, SampleSection
    from mixflow_bench.sampling import sample_to_npz
    from mixflow_bench.sampling.velocity import model_generator

    name = "sit-s-2" if smoke else "sit-xl-2"
    net = randomize(build_model(name)).to(device)
    codec = build_codec("sd-vae-ft-ema", 256, random_init=True, device=device)
    batch = fast_row["batch"]
    cfg = SampleSection(
        sampler="sde", steps=steps, guidance=GuidanceSection(kind="cfg", scale=1.5, channels=3),
        precision="bf16", compile=device.type == "cuda", batch_size=batch, shard_size=batch,
    )  # fmt: skip
    gen = model_generator(get_spec(name), net, cfg, codec=codec, device=device)
    with tempfile.TemporaryDirectory() as tmp:
        sample_to_npz(gen, batch, f"{tmp}/warm.npz", batch_size=batch, shard_size=batch, progress=False)
        sync()
        start = time.perf_counter()
        sample_to_npz(gen, 2 * batch, f"{tmp}/run.npz", batch_size=batch, shard_size=batch, progress=False)
        sync()
        wall = time.perf_counter() - start
    expected = 2 * (fast_row["s_per_step"] * steps + fast_row["decode_s"])
    return {"steps": steps, "images": 2 * batch, "wall_s": wall, "loop_estimate_s": expected,
            "overhead": wall / expected - 1.0}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default="sit,rae256,rae512")
    parser.add_argument("--timed-steps", type=int, default=8)
    parser.add_argument("--fidelity", action="store_true")
    parser.add_argument("--fidelity-only", action="store_true",
                        help="only the final-latent comparison with fp32 (no timing): one compilation per path")
    parser.add_argument("--compile-mode", default="default")
    parser.add_argument("--graphs", action="store_true", help="also time the fast path with CUDA graphs")
    parser.add_argument(
        "--fp8", action="store_true", help="also time (and with --fidelity, compare) the fast path with FP8 linears"
    )
    parser.add_argument("--pipeline", type=int, default=0, metavar="STEPS",
                        help="also run the real sampling pipeline (SiT, STEPS SDE steps) against the loop estimate")
    parser.add_argument("--json", default=None)
    parser.add_argument("--smoke", action="store_true", help="small models instead of XL (a quick check of the script)")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    rows = []
    for case in args.cases.split(","):
        new = bench_case(
            case, device, args.timed_steps, args.fidelity or args.fidelity_only, args.compile_mode, args.smoke,
            args.graphs, args.fp8, timing=not args.fidelity_only,
        )
        rows += new
        torch.cuda.empty_cache() if device.type == "cuda" else None
        console.print(new)
    pipeline = None
    if args.pipeline and "sit" in args.cases.split(","):
        fast_row = next(r for r in rows if r["case"].startswith("SiT") and r["path"] == "fast")
        pipeline = pipeline_check(device, fast_row, args.pipeline, args.smoke)
        console.print({"pipeline": pipeline})
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    table = Table(title=f"Sampling throughput on {name} (torch {torch.__version__})")
    for col in ("case", "path", "batch", "precision", "s/step", "decode s", "images/s", "ratio", "fidelity rel-L2"):
        table.add_column(col)
    for r in rows:
        fid = r.get("fidelity_rel_l2")
        table.add_row(
            r["case"],
            r["path"] + (" (emulation)" if r["path"] == "official" else ""),
            str(r["batch"]),
            r["precision"] + (f" +compile ({r['compile']})" if r["compile"] else ""),
            f"{r['s_per_step']:.4f}" if "s_per_step" in r else "-",
            f"{r['decode_s']:.3f}" if "decode_s" in r else "-",
            f"{r['images_per_s']:.3f}" if "images_per_s" in r else "-",
            f"{r['ratio']:.2f}x" if "ratio" in r else ("1.00x" if "images_per_s" in r else "-"),
            f"med {fid['median']:.2e} / max {fid['max']:.2e}" if fid else "",
        )
    console.print(table)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": name, "torch": torch.__version__, "official_rows": EMULATION, "rows": rows,
                       "pipeline": pipeline}, f, indent=2)  # fmt: skip


if __name__ == "__main__":
    main()
