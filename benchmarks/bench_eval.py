"""Time `mixflow-bench eval` (all five ADM metrics) on N random 256×256 images, against torch-fidelity's
own ``calculate_metrics`` (FID + IS + PRC) on the same images in the same run.

Random-init weights of the same Inception network are used, so it runs offline; the values are meaningless,
only the timings matter. CUDA: 50,000 samples and 10,000 reference images by default; CPU: a few hundred.

    PYTHONPATH=. python benchmarks/bench_eval.py [--n 50000] [--ref-n 10000] [--baseline-n N]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from rich.table import Table

from mixflow_bench.cli.common import console
from mixflow_bench.metrics.adm import evaluate_adm as evaluate
from mixflow_bench.metrics.inception import load_inception, random_state_dict
from mixflow_bench.metrics.npz_stream import NpzImageWriter


def write_random_npz(path: Path, n: int, size: int, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    w = NpzImageWriter(path, n, size, size)
    for start in range(0, n, 1000):
        m = min(1000, n - start)
        # smooth-ish images: low-res noise upsampled, so features are not all alike
        low = torch.randint(0, 256, (m, 3, size // 8, size // 8), generator=gen, dtype=torch.uint8)
        img = torch.nn.functional.interpolate(low.float(), size=(size, size), mode="bilinear")
        w.write(img.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy())
    w.close()


class NpzDataset(torch.utils.data.Dataset):
    """uint8 CHW tensors, as torch-fidelity's calculate_metrics wants them."""

    def __init__(self, path: Path, limit: int | None) -> None:
        arr = np.load(path)["arr_0"]
        self.arr = arr[:limit] if limit else arr

    def __len__(self) -> int:
        return len(self.arr)

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.from_numpy(self.arr[i]).permute(2, 0, 1).contiguous()


def main() -> None:
    cuda = torch.cuda.is_available()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=50_000 if cuda else 300)
    p.add_argument("--ref-n", type=int, default=10_000 if cuda else 100)
    p.add_argument("--baseline-n", type=int, default=None, help="images for the baseline (default: --n)")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=500 if cuda else 50)
    p.add_argument("--tf32", action="store_true", help="allow TF32 (default strict float32)")
    p.add_argument("--workdir", type=Path, default=None)
    p.add_argument("--no-baseline", action="store_true", help="leave out torch-fidelity's calculate_metrics")
    p.add_argument("--cudnn-benchmark", action="store_true",
                   help="also time a run with cudnn.benchmark on, and its metric differences")  # fmt: skip
    p.add_argument("--json", type=Path, default=None, help="write the timings and metrics here")
    args = p.parse_args()
    device = "cuda" if cuda else "cpu"
    base_n = args.baseline_n or args.n

    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        tmp = Path(tmp)
        samples, ref = tmp / "samples.npz", tmp / "ref.npz"
        t = time.perf_counter()
        write_random_npz(samples, args.n, args.size, 0)
        write_random_npz(ref, args.ref_n, args.size, 1)
        console.print(f"wrote {args.n} + {args.ref_n} random {args.size}² images in {time.perf_counter() - t:.1f} s")
        weights = tmp / "random-inception.pth"
        torch.save(random_state_dict(0), weights)
        net = load_inception(weights, device)

        t0 = time.perf_counter()
        res = evaluate(
            samples,
            ref,
            net=net,
            device=device,
            batch_size=args.batch_size,
            cache_dir=tmp / "cache",
            tf32=args.tf32,
        )
        ours_total = time.perf_counter() - t0
        # a repeat evaluation against the same reference file: its features come from the cache (keyed by the
        # file's sha256 and the weights), as when several runs are scored against one ADM reference batch
        t0 = time.perf_counter()
        repeat = evaluate(samples, ref, net=net, device=device, batch_size=args.batch_size, cache_dir=tmp / "cache",
                          tf32=args.tf32)  # fmt: skip
        repeat_total = time.perf_counter() - t0
        tuned, tuned_total = None, None
        if args.cudnn_benchmark:
            torch.backends.cudnn.benchmark = True
            t0 = time.perf_counter()
            tuned = evaluate(samples, ref, net=net, device=device, batch_size=args.batch_size,
                             cache_dir=tmp / "cache", tf32=args.tf32)  # fmt: skip
            tuned_total = time.perf_counter() - t0
            torch.backends.cudnn.benchmark = False

        base_total = float("nan")
        if args.no_baseline:
            base_n = 0
        else:
            base_total = baseline(samples, ref, base_n, weights, cuda, args.batch_size)

    report(args, res, ours_total, repeat, repeat_total, tuned, tuned_total, base_total, base_n)


def baseline(samples: Path, ref: Path, base_n: int, weights: Path, cuda: bool, batch_size: int) -> float:
    """Seconds of torch-fidelity's ``calculate_metrics`` (FID + IS + PRC) on ``base_n`` samples and the reference."""
    from torch_fidelity import calculate_metrics

    ds_s, ds_r = NpzDataset(samples, base_n), NpzDataset(ref, None)
    t0 = time.perf_counter()
    calculate_metrics(
        input1=ds_s,
        input2=ds_r,
        cuda=cuda,
        batch_size=batch_size,
        isc=True,
        fid=True,
        prc=True,
        feature_extractor="inception-v3-compat",
        feature_layer_prc="2048",
        feature_extractor_weights_path=str(weights),
        samples_shuffle=False,
        cache=False,
        verbose=False,
    )
    return time.perf_counter() - t0


def report(args, res, ours_total, repeat, repeat_total, tuned, tuned_total, base_total, base_n) -> None:  # noqa: ANN001
    """The rich table, the metrics and (``--json``) a JSON record of the run."""
    cuda = torch.cuda.is_available()
    tm = res.timings
    feat_rate = args.n / tm["features"]
    ref_rate = args.ref_n / tm["reference"]
    table = Table(
        title=f"eval benchmark: {args.n:,} samples + {args.ref_n:,} reference images at {args.size}² on "
        f"{torch.cuda.get_device_name(0) if cuda else 'CPU'} (float32{', TF32' if args.tf32 else ''})"
    )
    table.add_column("stage")
    table.add_column("mixflow-bench", justify="right")
    table.add_column("torch-fidelity calculate_metrics", justify="right")
    table.add_column("speed-up", justify="right")
    table.add_row("samples: decode+resize+Inception (+IS, stats)", f"{feat_rate:,.0f} img/s", "", "")
    table.add_row("reference: features + stats", f"{ref_rate:,.0f} img/s", "", "")
    for key, label in (
        ("fid", "FID matrix sqrt"),
        ("sfid", "sFID matrix sqrt"),
        ("precision_recall", "precision/recall"),
    ):
        table.add_row(label, f"{tm.get(key, float('nan')):.2f} s", "", "")
    base_scaled = base_total * (args.n + args.ref_n) / (base_n + args.ref_n) if base_n else float("nan")
    note = "" if base_n == args.n else f" (measured on {base_n:,}, scaled)"
    table.add_row(
        "total (FID+sFID+IS+P/R | FID+IS+PRC)",
        f"{ours_total:.1f} s",
        f"{base_scaled:.1f} s{note}" if base_n else "not run",
        f"{base_scaled / ours_total:.2f}×" if base_n else "",
    )
    table.add_row("repeat, reference cached: total", f"{repeat_total:.1f} s", "", "")
    table.add_row("repeat: samples stage", f"{args.n / repeat.timings['features']:,.0f} img/s", "", "")
    if tuned is not None:
        table.add_row("cudnn.benchmark on, reference cached: total", f"{tuned_total:.1f} s", "", "")
        table.add_row("cudnn.benchmark: samples stage", f"{args.n / tuned.timings['features']:,.0f} img/s", "", "")
    console.print(table)
    console.print({k: round(v, 4) for k, v in res.metrics.items()})
    deltas = {}
    if tuned is not None:
        deltas = {k: abs(tuned.metrics[k] - repeat.metrics[k]) for k in repeat.metrics}
        console.print({"cudnn.benchmark |difference|": deltas})
    if args.json:
        record = {
            "benchmark": "benchmarks/bench_eval.py", "device": torch.cuda.get_device_name(0) if cuda else "CPU",
            "torch": torch.__version__, "n": args.n, "ref_n": args.ref_n, "batch_size": args.batch_size,
            "tf32": args.tf32, "first_total_s": ours_total, "first_timings": res.timings,
            "repeat_total_s": repeat_total, "repeat_timings": repeat.timings,
            "cudnn_benchmark_total_s": tuned_total, "cudnn_benchmark_timings": tuned.timings if tuned else None,
            "cudnn_benchmark_metric_differences": deltas, "baseline_n": base_n,
            "torch_fidelity_total_s": base_total if base_n else None,
            "torch_fidelity_total_scaled_s": base_scaled if base_n else None, "metrics": res.metrics,
        }  # fmt: skip
        args.json.write_text(json.dumps(record, indent=1, default=float))


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    main()
