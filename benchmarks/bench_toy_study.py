"""Two hot spots of the small CPU study, each against the way it was computed before, in one run.

* ``exact MixFlow field``: one evaluation of the class-conditional MixFlow-optimal field on digits (2,000 samples
  against the 1,200 training images, 24 Gauss-Legendre nodes) with one ``x c^T`` product shared by every node,
  against one full density-and-velocity evaluation per node (the previous algorithm, restated here).
* ``nearest interpolation``: the Slow-Flow search of 512 states against the 8,192 toy2d training points, in
  chunks of 256 (the CPU default) against 4,096 reference rows.

Both sides of each case compute the same numbers (checked here: largest absolute difference printed). Timing:
``benchmarks/timing.py`` (warm-up until settled, median of 3 x ``--timed`` steps).

    python benchmarks/bench_toy_study.py --out benchmarks/results/cpu-<date>/toy_study.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import torch
from timing import TimingPolicy, time_steps

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mixflow_bench.analysis.exact_velocity import GaussianMixtureField  # noqa: E402
from mixflow_bench.analysis.slow_flow import nearest_interpolation  # noqa: E402


def per_node_mixflow(field: GaussianMixtureField, x: torch.Tensor, t: float, y: torch.Tensor, gamma: float):
    """The MixFlow field as computed before: a full per-class density and velocity evaluation at every node."""
    tau = torch.full((len(x),), t, dtype=torch.float64)
    lo = (1.0 - gamma) * tau
    logs, vels = [], []
    for node, weight in zip(field.nodes.tolist(), field.node_weights.tolist()):
        log_p, u = field.log_density_and_velocity(x, lo + node * (tau - lo), y)
        logs.append(log_p + torch.log(torch.tensor(weight, dtype=torch.float64)))
        vels.append(u)
    a = torch.softmax(torch.stack(logs), 0)
    return (a[:, :, None] * torch.stack(vels)).sum(0)


def case_exact_field(policy: TimingPolicy) -> dict:
    from sklearn.datasets import load_digits

    digits = load_digits()
    data = torch.from_numpy(digits.data[:1200]).double() / 8.0 - 1.0
    labels = torch.from_numpy(digits.target[:1200])
    field = GaussianMixtureField(data, 0.0, labels)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2000, 64, generator=g, dtype=torch.float64)
    y = torch.randint(0, 10, (2000,), generator=g)
    t, gamma = 0.7, 0.5
    new_v = field.mixflow(x, torch.full((2000,), t, dtype=torch.float64), y, gamma)
    diff = float((new_v - per_node_mixflow(field, x, t, y, gamma)).abs().max())
    new = time_steps(lambda: field.mixflow(x, torch.full((2000,), t, dtype=torch.float64), y, gamma), policy)
    old = time_steps(lambda: per_node_mixflow(field, x, t, y, gamma), policy)
    return {"case": "exact MixFlow field, digits (2,000 x 1,200, 24 nodes)", "new": "one x c^T for every node",
            "peer": "a full evaluation per node", "new_s": new.median_s, "peer_s": old.median_s,
            "max_abs_diff": diff, "timing_new": new.as_dict(), "timing_peer": old.as_dict()}  # fmt: skip


def case_nearest(policy: TimingPolicy) -> dict:
    g = torch.Generator().manual_seed(0)
    x, x0, ref = torch.randn(512, 2, generator=g), torch.randn(512, 2, generator=g), torch.randn(8192, 2, generator=g)
    a, b = nearest_interpolation(x, x0, ref, 256), nearest_interpolation(x, x0, ref, 4096)
    diff = float((a[0] - b[0]).abs().max())
    new = time_steps(lambda: nearest_interpolation(x, x0, ref, 256), policy)
    old = time_steps(lambda: nearest_interpolation(x, x0, ref, 4096), policy)
    return {"case": "Slow-Flow nearest interpolation, toy2d (512 x 8,192)", "new": "chunks of 256",
            "peer": "chunks of 4,096", "new_s": new.median_s, "peer_s": old.median_s, "max_abs_diff": diff,
            "timing_new": new.as_dict(), "timing_peer": old.as_dict()}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--timed", type=int, default=10, help="timed steps per repeat")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    policy = TimingPolicy(timed=args.timed, max_warmup=10)
    rows = []
    for case in (case_exact_field, case_nearest):
        row = case(policy)
        row["ratio"] = row["peer_s"] / row["new_s"]
        rows.append(row)
        print(f"{row['case']:55s} {row['new_s'] * 1e3:9.1f} ms vs {row['peer_s'] * 1e3:9.1f} ms ({row['peer']}): "
              f"{row['ratio']:.2f}x, max abs diff {row['max_abs_diff']:.1e}", flush=True)  # fmt: skip
    result = {"device": f"CPU ({platform.processor() or platform.machine()}), {args.threads} threads",
              "torch": torch.__version__, "rows": rows}  # fmt: skip
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
