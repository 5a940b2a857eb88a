"""Data pipeline throughput: reading a latent cache vs per-sample .npy files, image preprocessing, encoders.

Run: ``PYTHONPATH=. python benchmarks/bench_data.py [--samples N] [--dir DIR]``. Uses CUDA for encoders when
present; on CPU everything runs at a tiny size. Baselines are measured in the same run:

* cache read: ``LatentBatches`` (memory-mapped shards, prefetch thread) vs one ``np.load`` per sample file
  (the per-sample layout of REPA's ``dataset_tools.py encode``), both drawing posterior samples;
* preprocessing: ADM crop with a thread pool vs a single thread;
* encoders: random-init zoo codecs (``sd-vae-ft-ema``, ``rae-dinov2-b``) when the zoo is available.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from mixflow_bench.data import cache
from mixflow_bench.data.loader import LatentBatches, LatentDataset
from mixflow_bench.data.prepare import finalize_manifest
from mixflow_bench.data.preprocess import preprocess_to_array

console = Console()


def write_synthetic_cache(out: str, n: int, shard_size: int, shape=(4, 32, 32), flips: int = 2) -> None:
    """A cache with random SD-VAE-like fields, laid out exactly as ``prepare`` writes it."""
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(0)
    settings = {
        "format": cache.FORMAT,
        "version": cache.VERSION,
        "encoder": "synthetic",
        "resolution": 8 * shape[-1],
        "shard_size": shard_size,
        "flips": flips,
        "dtype": "float32",
        "classes": [str(i) for i in range(1000)],
        "source": {"path": "synthetic", "kind": "synthetic", "num_records": n},
        "preprocessing": {},
    }
    cache.atomic_write_json(os.path.join(out, cache.SETTINGS), settings)
    for i, lo in enumerate(range(0, n, shard_size)):
        m = min(shard_size, n - lo)
        arrays = {
            "mean": rng.standard_normal((m, flips, *shape), dtype=np.float32),
            "std": rng.uniform(0.01, 0.2, (m, flips, *shape)).astype(np.float32),
            "labels": rng.integers(0, 1000, m).astype(np.int64),
        }
        files = {}
        for name, arr in arrays.items():
            fname = cache.shard_file(i, name)
            cache.atomic_save_npy(os.path.join(out, fname), arr)
            path = os.path.join(out, fname)
            files[name] = {"name": fname, "sha256": cache.sha256_file(path), "bytes": os.path.getsize(path)}
        record = {
            "index": i,
            "first_record": lo,
            "count": m,
            "files": files,
            "skipped": [],
            "keys": [],
            "field_shapes": {"mean": list(shape), "std": list(shape)},
            "latent_shape": list(shape),
        }
        cache.atomic_write_json(os.path.join(out, cache.shard_record_file(i)), record)
    finalize_manifest(out)


def write_per_sample_files(cache_dir: str, out: str) -> np.ndarray:
    """The naive layout: one ``.npy`` (mean ++ std, original orientation) per sample."""
    os.makedirs(out, exist_ok=True)
    ds = LatentDataset(cache_dir)
    for i in range(len(ds)):
        fields, _ = ds[i]
        np.save(os.path.join(out, f"{i:08d}.npy"), np.concatenate([fields["mean"][0], fields["std"][0]]))
    return ds.labels


def drop_page_cache_hint(paths: list[str]) -> None:
    for p in paths:  # best effort: ask the kernel to forget cached pages so both readers start cold
        with contextlib.suppress(OSError, AttributeError):
            fd = os.open(p, os.O_RDONLY)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            os.close(fd)


def bench_read(cache_dir: str, naive_dir: str, labels: np.ndarray, batch: int, steps: int) -> tuple[float, float]:
    drop_page_cache_hint([str(p) for p in __import__("pathlib").Path(cache_dir).glob("*.npy")])
    loader = LatentBatches(LatentDataset(cache_dir), batch, seed=0, prefetch=2)
    it = iter(loader)
    next(it)
    t0 = time.perf_counter()
    for _ in range(steps):
        next(it)
    fast = steps * batch / (time.perf_counter() - t0)
    drop_page_cache_hint([os.path.join(naive_dir, f) for f in os.listdir(naive_dir)])
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(labels))
    t0 = time.perf_counter()
    for s in range(steps):
        idx = perm[(s * batch) % (len(perm) - batch) :][:batch]
        ms = torch.from_numpy(np.stack([np.load(os.path.join(naive_dir, f"{i:08d}.npy")) for i in idx]))
        mean, std = ms.chunk(2, dim=1)
        _x, _y = mean + std * torch.randn_like(mean), torch.from_numpy(labels[idx])
    naive = steps * batch / (time.perf_counter() - t0)
    return fast, naive


def bench_preprocess(n: int, workers: int) -> tuple[float, float]:
    from PIL import Image

    rng = np.random.default_rng(0)
    blobs = []
    for _ in range(n):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (375, 500, 3), dtype=np.uint8)).save(buf, "JPEG", quality=90)
        blobs.append(buf.getvalue())
    t0 = time.perf_counter()
    for b in blobs:
        preprocess_to_array(b, 256)
    serial = n / (time.perf_counter() - t0)
    with ThreadPoolExecutor(workers) as pool:
        t0 = time.perf_counter()
        list(pool.map(lambda b: preprocess_to_array(b, 256), blobs))
        threaded = n / (time.perf_counter() - t0)
    return threaded, serial


def bench_encoders(device: str, batch: int, iters: int, resolutions=(256,)) -> list[tuple[str, str]]:
    """fp32 encoder throughput (the precision ``data prepare`` encodes in), random weights of the real models."""
    rows = []
    try:
        from mixflow_bench.data.codec import build_named_codec
    except ImportError:
        return [("encoders", "codec module unavailable")]
    for name, res in [(n, r) for r in resolutions for n in ("sd-vae-ft-ema", "rae-dinov2-b")]:
        try:
            codec = build_named_codec(name, res, random_init=True, device=device)
        except Exception as exc:  # zoo not merged yet, or the model cannot be built here
            rows.append((f"{name}@{res}", f"unavailable: {str(exc)[:70]}"))
            continue
        x = torch.rand(batch, 3, res, res, device=device)
        with torch.inference_mode():
            codec.encode(x)
            if device == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(iters):
                codec.encode(x)
            if device == "cuda":
                torch.cuda.synchronize()
        rate = iters * batch / (time.perf_counter() - t0)
        rows.append((f"{name}@{res} (batch {batch})", f"{rate:,.1f} img/s"))
        del codec
        if device == "cuda":
            torch.cuda.empty_cache()
    return rows


def main() -> None:
    cuda = torch.cuda.is_available()
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--samples", type=int, default=32768 if cuda else 2048)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--steps", type=int, default=40 if cuda else 6)
    ap.add_argument("--dir", default=None, help="Where to write the temporary caches (default: a temp dir).")
    ap.add_argument("--json", default=None, help="also save the table's rows here")
    args = ap.parse_args()
    device = "cuda" if cuda else "cpu"
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        cdir, ndir = os.path.join(tmp, "cache"), os.path.join(tmp, "per_sample")
        write_synthetic_cache(cdir, args.samples, shard_size=max(1, args.samples // 4))
        labels = write_per_sample_files(cdir, ndir)
        fast, naive = bench_read(cdir, ndir, labels, args.batch, args.steps)
    threaded, serial = bench_preprocess(16 if not cuda else 128, workers=min(8, os.cpu_count() or 1))
    enc = bench_encoders(device, 64 if cuda else 1, 10 if cuda else 1, (256, 512) if cuda else (256,))
    table = Table(title=f"data pipeline throughput ({device}, {args.samples} cached samples, 4x32x32 x2 flips)")
    table.add_column("what")
    table.add_column("rate", justify="right")
    table.add_column("baseline (same run)", justify="right")
    table.add_column("ratio", justify="right")
    table.add_row(
        "read latents: LatentBatches (mmap shards)",
        f"{fast:,.0f} samples/s",
        f"{naive:,.0f} samples/s (np.load per file)",
        f"{fast / naive:.1f}x",
    )
    table.add_row(
        "decode+ADM crop 500x375 JPEG -> 256",
        f"{threaded:,.1f} img/s",
        f"{serial:,.1f} img/s (1 thread)",
        f"{threaded / serial:.1f}x",
    )
    for what, rate in enc:
        table.add_row(f"encode {what}", rate, "-", "-")
    console.print(table)
    if args.json:
        name = torch.cuda.get_device_name() if cuda else "cpu"
        rows = {"device": name, "torch": torch.__version__, "read_samples_per_s": [fast, naive],
                "preprocess_img_per_s": [threaded, serial], "encoders": dict(enc)}  # fmt: skip
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
