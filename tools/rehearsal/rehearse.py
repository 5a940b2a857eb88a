"""Dress rehearsal of the paper recipes (see tools/rehearsal/README.md).

    python tools/rehearsal/rehearse.py --recipes sit-b-256,rae-256-cfg --launchers local,torchrun --workdir /tmp/r

Each recipe runs end to end through `python -m mixflow_bench` against random-weight artifacts in their real formats,
served from 127.0.0.1; the report (JSON) lists every stage's wall time, the checks and the metrics.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from mixflow_bench.rehearsal.inception import fid_helper_weights, unpack_fp16
from mixflow_bench.rehearsal.run import LAUNCH_ARGS, Rehearsal, Scale, write_report

PAPER_RECIPES = ("sit-b-256", "sit-b-256-cfg", "sit-xl-256", "sit-xl-256-cfg", "sit-xl-512", "sit-xl-512-cfg",
                 "repa-256", "repa-256-cfg", "rae-256", "rae-256-cfg", "rae-512", "rae-512-cfg")  # fmt: skip
# Slurm: 2 CPU tasks per job (a CPU-only cluster has no GPUs to ask for; on GPUs: --gpus-per-node 2)


def device_name() -> str:
    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    return f"CPU ({platform.processor() or platform.machine()}), torch {torch.__version__}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipes", default=",".join(PAPER_RECIPES))
    ap.add_argument("--launchers", default="local", help="local,torchrun,slurm (the first is the reference run)")
    ap.add_argument("--workdir", type=Path, default=Path("runs/rehearsal"))
    ap.add_argument("--inception", type=Path, default=None,
                    help="fid-helper default_1.pt (pip-downloaded if absent and not given)")
    ap.add_argument("--inception-copy", type=Path, default=None,
                    help="a float16 copy of it made by pack_fp16, for machines that cannot receive 87 MB")
    ap.add_argument("--override", action="append", default=[],
                    help="extra KEY=VALUE for every reproduce call (say why in the report)")
    ap.add_argument("--scale", default="{}", help='JSON overrides of the Scale fields, e.g. {"samples": 64}')
    ap.add_argument("--resume-check", default="", metavar="RECIPES",
                    help="comma-separated recipes (or 'all') whose reference run is killed during sampling and resumed")
    ap.add_argument("--fast", action="store_true", help="also rehearse `reproduce --fast` on the reference launcher")
    ap.add_argument("--reuse-sibling-training", action="store_true",
                    help="a guided recipe (NAME-cfg) starts from NAME's finished post-training when NAME ran before "
                    "(identical train: sections; reproduce must skip the train stage)")
    ap.add_argument("--cleanup", action="store_true", help="delete post-training checkpoints after each recipe")
    ap.add_argument("--report", type=Path, default=None)
    args = ap.parse_args(argv)

    console = Console()
    args.workdir.mkdir(parents=True, exist_ok=True)
    if args.inception_copy is not None:
        inception = unpack_fp16(args.inception_copy, args.workdir / "inception-fp16-as-fp32.pth")
        network = "fid-helper TF-2015 Inception rounded to float16 for transport (not bit-exact)"
    else:
        inception = fid_helper_weights(args.inception or args.workdir / "inception" / "default_1.pt")
        network = "fid-helper TF-2015 Inception (real weights, sha256-checked)"
    scale = Scale(**json.loads(args.scale))
    device = "cuda" if "CPU" not in device_name() else "cpu"
    results = []
    report = args.report or args.workdir / "report.json"
    about = {"inception": network, "scale": scale.__dict__, "extra_overrides": args.override}
    launchers = args.launchers.split(",")
    resume = args.resume_check.split(",")
    start = time.perf_counter()
    with Rehearsal(args.workdir, str(inception), scale, device) as rehearsal:
        for recipe in args.recipes.split(","):
            first = None
            for i, launcher in enumerate(launchers):
                sibling = args.workdir / "runs" / f"{recipe.removesuffix('-cfg')}-{launcher}"
                reuse = args.reuse_sibling_training and recipe.endswith("-cfg") and (sibling / "train").exists()
                r = rehearsal.rehearse(recipe, launcher=launcher, launcher_args=LAUNCH_ARGS[launcher],
                                       resume_check=i == 0 and (args.resume_check == "all" or recipe in resume),
                                       compare_with=first, extra_overrides=args.override,
                                       reuse_training_of=sibling if reuse else None, cleanup=args.cleanup)  # fmt: skip
                results.append(r)
                write_report(results, report, device_name(), about)  # after each run: a killed rehearsal keeps it
                first = first or (args.workdir / "runs" / f"{recipe}-{launcher}")
                console.print(f"{'[green]PASS' if r.ok else '[red]FAIL'}[/] {recipe} ({launcher}) "
                              f"{sum(r.stages.values()):.0f} s" + (f"\n{r.error}" if r.error else ""))  # fmt: skip
            if args.fast:
                trained = args.workdir / "runs" / f"{recipe}-{launchers[0]}"
                r = rehearsal.rehearse(recipe, launcher=launchers[0], launcher_args=LAUNCH_ARGS[launchers[0]],
                                       fast=True, extra_overrides=args.override, cleanup=args.cleanup,
                                       reuse_training_of=trained)  # fmt: skip
                results.append(r)
                write_report(results, report, device_name(), about)
                console.print(f"{'[green]PASS' if r.ok else '[red]FAIL'}[/] {recipe} (--fast) {r.error}")
    write_report(results, report, device_name(), about)
    table = Table(title=f"rehearsal on {device_name()}: {time.perf_counter() - start:.0f} s")
    for col in ("recipe", "launcher", "result", "wall s", "checks", "metrics (first variant)"):
        table.add_column(col)
    for r in results:
        first_metrics = next(iter(r.metrics.values()), {})
        metrics = ", ".join(f"{k} {v:.3g}" for k, v in first_metrics.items())
        table.add_row(r.recipe, r.launcher, "pass" if r.ok else "FAIL", f"{sum(r.stages.values()):.0f}",
                      ", ".join(r.checks), metrics)  # fmt: skip
    console.print(table)
    console.print(f"report: {report}")
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
