"""Does the fast training path learn like the exact one? Loss curves of both through the real engine, 3 seeds.

A small SiT of the zoo (``sit-s-4``, the shapes study's model) is post-trained with MixFlow (gamma 0.8) on the
procedural shapes (32x32 RGB, :mod:`mixflow_bench.data.shapes`) by :func:`mixflow_bench.train.engine.train`,
the function ``mixflow-bench train`` drives (AdamW, clip 1.0, EMA, checkpoints), once per path and seed:

* ``exact``: the recipes' default, fp32 with TF32 matmuls, eager;
* ``fast``: what ``--fast`` trains with, bf16 autocast and ``torch.compile``.

Within a seed both paths start from the same weights and see the same batches and the same noise, times and
slowing (the engine draws them from the seed), so their difference is the arithmetic alone. The engine logs the
mean loss of each window of ``--window`` steps. For each window the script reports the exact path's mean and
seed-to-seed standard deviation, and the fast-minus-exact difference (mean over seeds, paired 95% t interval);
a window passes when that mean difference is within the exact path's seed-to-seed standard deviation. The final
weights of both paths are then scored the same way, in fp32 on held-out images with fixed draws, which separates
what the weights learned from how each path computes its training loss.

    python benchmarks/train_fast_vs_exact.py --out $OUT/train_fast_vs_exact.json     # one GPU, about 3 minutes
    python benchmarks/train_fast_vs_exact.py --smoke                                  # tiny, on the CPU
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from mixflow_bench.data.shapes import SHAPE_CLASSES, generate_shapes, to_model_space
from mixflow_bench.experiments.shapes import PATH, t_quantile_975
from mixflow_bench.flow import mixflow
from mixflow_bench.models.zoo import get_spec
from mixflow_bench.train.batches import InMemoryBatches
from mixflow_bench.train.engine import TrainConfig, train

PATHS = {"exact": {"precision": "fp32", "compile": False}, "fast": {"precision": "bf16", "compile": True}}


@torch.no_grad()
def eval_loss_fp32(model, objective, x, y, device: str, chunk: int = 512) -> float:
    """The trained weights' mean loss on fixed held-out images and fixed draws, in fp32 with TF32 off: the same
    measurement for both paths, so a difference is in the weights, not in how the loss was computed."""
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        gen = torch.Generator(device=device).manual_seed(1234)
        draws = objective.draw(len(x), tuple(x.shape[1:]), gen)
        model = model.eval()
        total = 0.0
        for i in range(0, len(x), chunk):
            part = {k: v[i : i + chunk] for k, v in draws.items()}
            xb, yb = x[i : i + chunk].to(device), y[i : i + chunk].to(device)
            total += float(objective.loss(model, xb, yb, part).double().sum())
        return total / len(x)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32


def run_path(path: str, seed: int, x, y, args, device: str, held_out=None) -> tuple[list[dict], float | None]:
    """Train one model from seed ``seed``'s initial weights along ``path``; the engine's log records and, with
    ``held_out`` images, the final weights' fp32 loss on them."""
    torch.manual_seed(seed)
    overrides = {"depth": 2, "hidden_size": 64, "num_heads": 2} if args.smoke else {}
    model = get_spec(args.model).build(in_channels=3, learn_sigma=False, num_classes=len(SHAPE_CLASSES), **overrides)
    objective = mixflow(PATH, gamma=args.gamma, null_label=len(SHAPE_CLASSES))
    config = TrainConfig(
        steps=args.steps, global_batch_size=args.batch, lr=args.lr, grad_clip=1.0, ema_decay=0.999,
        warmup_steps=0, checkpoint_every=args.steps // 2, log_every=args.window, seed=seed, device=device,
        **PATHS[path],
    )  # fmt: skip
    records: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        train(model.to(device), objective, InMemoryBatches(x, y, args.batch, seed=seed), config, tmp,
              resume=False, progress=False, on_log=records.append)  # fmt: skip
    final = None if held_out is None else eval_loss_fp32(model, objective, *held_out, device)
    return records, final


def compare(curves: dict[str, dict[int, list[float]]], steps: list[int]) -> list[dict]:
    """Per logged window: the exact path's mean and seed spread, and the paired fast-minus-exact difference."""
    rows = []
    seeds = sorted(curves["exact"])
    for w, step in enumerate(steps):
        exact = [curves["exact"][s][w] for s in seeds]
        diff = [curves["fast"][s][w] - curves["exact"][s][w] for s in seeds]
        mean_d = statistics.fmean(diff)
        sd_d = statistics.stdev(diff) if len(diff) > 1 else 0.0
        half = t_quantile_975(len(diff) - 1) * sd_d / len(diff) ** 0.5 if len(diff) > 1 else float("nan")
        seed_sd = statistics.stdev(exact) if len(exact) > 1 else float("nan")
        rows.append({
            "step": step, "exact_mean": statistics.fmean(exact), "exact_seed_std": seed_sd,
            "fast_minus_exact_mean": mean_d, "fast_minus_exact_ci95": [mean_d - half, mean_d + half],
            "within_seed_spread": abs(mean_d) <= seed_sd,
        })  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="sit-s-4")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--window", type=int, default=40, help="steps per logged mean loss")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--gamma", type=float, default=0.8)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--num-train", type=int, default=16384)
    parser.add_argument("--num-eval", type=int, default=4096, help="held-out images for the final fp32 loss")
    parser.add_argument("--smoke", action="store_true", help="a tiny SiT, 20 steps, on the CPU")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.smoke:
        args.steps, args.window, args.batch, args.num_train, args.seeds, args.num_eval = 20, 5, 16, 256, 2, 64
    images, labels = generate_shapes(args.num_train, seed=0)
    x, y = to_model_space(images), labels
    held_images, held_labels = generate_shapes(args.num_eval, seed=1)
    held_out = (to_model_space(held_images), held_labels)
    curves: dict[str, dict[int, list[float]]] = {p: {} for p in PATHS}
    final: dict[str, dict[int, list[float]]] = {p: {} for p in PATHS}
    seconds: dict[str, float] = {p: 0.0 for p in PATHS}
    steps: list[int] = []
    for seed in range(args.seeds):
        for path in PATHS:
            start = time.perf_counter()
            records, held = run_path(path, seed, x, y, args, device, held_out)
            seconds[path] += time.perf_counter() - start
            curves[path][seed] = [r["loss"] for r in records]
            final[path][seed] = [held]
            steps = [r["step"] for r in records]
            print(f"seed {seed} {path}: last window loss {records[-1]['loss']:.5f}, held-out fp32 loss {held:.5f}, "
                  f"{records[-1]['images_per_s']:.0f} img/s", flush=True)  # fmt: skip
    rows = compare(curves, steps)
    held_row = compare(final, [args.steps])[0]
    print(f"{'step':>6} {'exact mean':>11} {'seed std':>9} {'fast-exact':>11} {'95% CI':>22}  within")
    for r in rows:
        lo, hi = r["fast_minus_exact_ci95"]
        print(f"{r['step']:6d} {r['exact_mean']:11.5f} {r['exact_seed_std']:9.5f} {r['fast_minus_exact_mean']:+11.5f} "
              f"[{lo:+.5f}, {hi:+.5f}]  {'yes' if r['within_seed_spread'] else 'NO'}")  # fmt: skip
    lo, hi = held_row["fast_minus_exact_ci95"]
    print(f"final weights, fp32 loss on {args.num_eval} held-out images (same draws): exact "
          f"{held_row['exact_mean']:.5f} (seed std {held_row['exact_seed_std']:.5f}), fast - exact "
          f"{held_row['fast_minus_exact_mean']:+.5f} [{lo:+.5f}, {hi:+.5f}]")  # fmt: skip
    result = {
        "model": args.model, "objective": f"mixflow gamma {args.gamma}", "steps": args.steps, "batch": args.batch,
        "lr": args.lr, "window": args.window, "seeds": args.seeds, "paths": PATHS, "device":
        torch.cuda.get_device_name() if device == "cuda" else "cpu", "torch": torch.__version__,
        "curves": {p: {str(s): c for s, c in v.items()} for p, v in curves.items()}, "windows": rows,
        "held_out_fp32": {"num": args.num_eval, "per_seed": {p: {str(k): v[0] for k, v in f.items()}
                          for p, f in final.items()}, **held_row},
        "all_within_seed_spread": all(r["within_seed_spread"] for r in rows), "seconds": seconds,
        "command": "python benchmarks/train_fast_vs_exact.py " + " ".join(sys.argv[1:] if argv is None else argv),
    }  # fmt: skip
    print(f"every window within the seed spread: {result['all_within_seed_spread']}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
