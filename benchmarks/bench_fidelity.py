"""Does the fast path move the metric? fp32 against bf16 autocast (+ ``torch.compile`` on a GPU) on a *trained*
model, 10,000 samples from the same noise, with the metric's own sampling noise measured beside it.

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
import tempfile

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from mixflow_bench.flow import euler, uniform_grid
from mixflow_bench.flow.objectives import FlowMatching
from mixflow_bench.flow.paths import Path
from mixflow_bench.recipes.loader import load_recipe
from mixflow_bench.sampling.fast import FastPath, prepare_model
from mixflow_bench.sampling.velocity import precision_context
from mixflow_bench.toy import study
from mixflow_bench.toy.metrics import data_fd

console = Console()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num", type=int, default=10_000)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--train-steps", type=int, default=1500)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    recipe = load_recipe("digits")
    data = study.load_study_data(recipe)
    model = study.build_model(recipe, data, seed=0)
    objective = FlowMatching(Path("linear", study.CONVENTION))
    with tempfile.TemporaryDirectory() as tmp:
        ema = study._train_stage(model, objective, data, recipe, args.train_steps, 0, tmp, None)
    model.load_state_dict(ema)
    model = model.to(device)
    paths = {
        "fp32": FastPath(precision="fp32", compile=False),
        "fast": FastPath(precision="bf16", compile=device.type == "cuda"),
    }
    nets = {name: prepare_model(model, fp) for name, fp in paths.items()}
    reference = data.heldout.x
    fds: dict[str, list[float]] = {name: [] for name in paths}
    rel: list[np.ndarray] = []
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
        d = (samples["fast"] - samples["fp32"]).flatten(1).norm(dim=1) / samples["fp32"].flatten(1).norm(dim=1)
        rel.append(d.numpy())
    diffs = np.array(fds["fast"]) - np.array(fds["fp32"])
    rel_all = np.concatenate(rel)
    result = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "num": args.num,
        "steps": args.steps,
        "fd": {
            name: {"mean": float(np.mean(v)), "std": float(np.std(v, ddof=1)), "per_seed": v} for name, v in fds.items()
        },
        "paired_diff": {"mean": float(diffs.mean()), "max_abs": float(np.abs(diffs).max())},
        "rel_l2": {"median": float(np.median(rel_all)), "p95": float(np.quantile(rel_all, 0.95)),
                   "max": float(rel_all.max())},
    }  # fmt: skip
    table = Table(title=f"fp32 vs fast path on the trained digits model ({result['device']}, {args.num} samples)")
    for col in ("path", "FD mean", "FD std over seeds", "paired diff (fast - fp32)", "rel-L2 median / max"):
        table.add_column(col)
    table.add_row("fp32", f"{result['fd']['fp32']['mean']:.5f}", f"{result['fd']['fp32']['std']:.5f}", "", "")
    table.add_row(
        "bf16" + (" + compile" if paths["fast"].compile else ""),
        f"{result['fd']['fast']['mean']:.5f}",
        f"{result['fd']['fast']['std']:.5f}",
        f"{result['paired_diff']['mean']:+.2e} (max |{result['paired_diff']['max_abs']:.2e}|)",
        f"{result['rel_l2']['median']:.2e} / {result['rel_l2']['max']:.2e}",
    )
    console.print(table)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
