"""Does the fast path move the metric? fp32 against bf16 autocast (+ ``torch.compile`` on a GPU) on a *trained*
model, 10,000 samples from the same noise, with the metric's own sampling noise measured beside it; ``--fp8`` adds the
opt-in FP8 path (bf16 autocast with the hidden linears as FP8 matmuls; CUDA compute capability 8.9+).

No ImageNet checkpoint or Inception weights can be used offline, so the trained model here is the ``digits``
recipe's flow-matching baseline (the toy MLP on scikit-learn's 8x8 digits, trained on the spot) and the metric is
the data-space Fréchet distance to the held-out digits. For each of ``--seeds`` noise seeds both paths sample
the same 10,000 starting points with Euler 50; the table gives FD per path (mean and std over seeds), the mean
paired difference, and the per-sample relative L2 distance between the paths' samples. It is a check of the
switches on a real trained network, not of FID on ImageNet.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from mixflow_bench.flow import euler, uniform_grid
from mixflow_bench.metrics.toy import data_fd
from mixflow_bench.models.float8 import float8_unsupported_reason
from mixflow_bench.recipes.loader import load_recipe
from mixflow_bench.sampling.fast import FastPath, prepare_model
from mixflow_bench.sampling.velocity import precision_context
from mixflow_bench.toy import study
from mixflow_bench.toy.ensemble import Ensemble, Member, train_ensemble

console = Console()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num", type=int, default=10_000)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--train-steps", type=int, default=1500)
    parser.add_argument("--fp8", action="store_true", help="also the fast path with FP8 linears (CUDA 8.9+)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    recipe = load_recipe("digits")
    data = study.load_study_data(recipe)
    model = study.build_model(recipe, data, seed=0)
    cfg = recipe.study  # the study's baseline training (flow matching), one member
    ensemble = Ensemble(model, [model.state_dict()])
    trained = train_ensemble(ensemble, [Member(0, "baseline")], data.train.x, data.train.y, steps=args.train_steps,
                             stage_seed=1, batch_size=cfg.batch_size, lr=cfg.lr, ema_decay=cfg.ema_decay,
                             grad_clip=recipe.train.grad_clip if recipe.train else None)  # fmt: skip
    model.load_state_dict(ensemble.member_state(trained.ema, 0))
    model = model.to(device)
    paths = {
        "fp32": FastPath(precision="fp32", compile=False),
        "fast": FastPath(precision="bf16", compile=device.type == "cuda"),
    }
    if args.fp8:  # opt-in: the fast path with the MLP's hidden linears (256 x 256) as FP8 matmuls
        reason = float8_unsupported_reason(device)
        if reason is None:
            paths["fast-fp8"] = FastPath(precision="fp8", compile=device.type == "cuda")
        else:
            console.print(f"fast-fp8: skipped ({reason})", soft_wrap=True, highlight=False)
    nets = {name: prepare_model(model, fp) for name, fp in paths.items()}
    reference = data.heldout.x
    fds: dict[str, list[float]] = {name: [] for name in paths}
    rel: dict[str, list[np.ndarray]] = {name: [] for name in paths if name != "fp32"}
    for seed in range(args.seeds):
        g = torch.Generator().manual_seed(seed)
        x0 = torch.randn((args.num, *data.train.data_shape), generator=g).to(device)
        y = data.train.y[torch.randint(len(data.train.y), (args.num,), generator=g)].to(device)
        samples = {}
        for name, fp in paths.items():
            net = nets[name]
            with torch.no_grad(), precision_context(fp.precision, device):
                x = euler(lambda x, t, n=net, y=y: n(x, t, y).float(), x0, uniform_grid(args.steps, study.CONVENTION))
            samples[name] = x.float().cpu()
            fds[name].append(data_fd(samples[name], reference))
        for name in rel:
            d = samples[name] - samples["fp32"]
            rel[name].append((d.flatten(1).norm(dim=1) / samples["fp32"].flatten(1).norm(dim=1)).numpy())
    result = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "num": args.num,
        "steps": args.steps,
        "paths": {name: {"precision": fp.precision, "compile": fp.compile} for name, fp in paths.items()},
        "fd": {
            name: {"mean": float(np.mean(v)), "std": float(np.std(v, ddof=1)), "per_seed": v} for name, v in fds.items()
        },
        "paired_diff": {},
        "rel_l2": {},
    }
    for name, per_seed in rel.items():
        diffs = np.array(fds[name]) - np.array(fds["fp32"])
        rel_all = np.concatenate(per_seed)
        result["paired_diff"][name] = {"mean": float(diffs.mean()), "max_abs": float(np.abs(diffs).max())}
        result["rel_l2"][name] = {"median": float(np.median(rel_all)), "p95": float(np.quantile(rel_all, 0.95)),
                                  "max": float(rel_all.max())}  # fmt: skip
    table = Table(title=f"fp32 vs faster paths on the trained digits model ({result['device']}, {args.num} samples)")
    for col in ("path", "FD mean", "FD std over seeds", "paired diff (path - fp32)", "rel-L2 median / max"):
        table.add_column(col)
    for name, fp in paths.items():
        label = ("bf16" if fp.precision == "bf16" else fp.precision) + (" + compile" if fp.compile else "")
        fd = result["fd"][name]
        if name == "fp32":
            table.add_row(label, f"{fd['mean']:.5f}", f"{fd['std']:.5f}", "", "")
            continue
        pd, rl = result["paired_diff"][name], result["rel_l2"][name]
        shift = f"{pd['mean']:+.2e} (max |{pd['max_abs']:.2e}|)"
        table.add_row(label, f"{fd['mean']:.5f}", f"{fd['std']:.5f}", shift, f"{rl['median']:.2e} / {rl['max']:.2e}")
    console.print(table)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
