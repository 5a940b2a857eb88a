"""Reference batches: ADM's stored ``mu/sigma/mu_s/sigma_s`` when present, else statistics computed from
``arr_0``; ``arr_0`` features are also what precision/recall compares against. Computed values are cached on
disk, keyed by the reference file's sha256 and the network weights, written atomically.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mixflow_bench.atomic import atomic_write
from mixflow_bench.metrics.features import extract
from mixflow_bench.metrics.frechet import GaussianStats
from mixflow_bench.metrics.inception import InceptionFeatures
from mixflow_bench.metrics.npz_stream import IMAGE_KEY, NpzFormatError, NpzImageReader, npz_keys


@dataclass
class ReferenceData:
    pool_stats: GaussianStats | None
    spatial_stats: GaussianStats | None
    pool_features: np.ndarray | None
    num_images: int | None  # images in arr_0 (None when there are none)
    stats_source: str  # "stored" (the file's mu/sigma) or "computed" (from arr_0)


def default_cache_dir() -> Path:
    root = os.environ.get("MIXFLOW_BENCH_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "mixflow-bench"
    )
    return Path(root) / "ref-stats"


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _atomic_savez(path: Path, **arrays: np.ndarray) -> None:
    atomic_write(path, lambda f: np.savez(f, **arrays))


def load_reference(
    path: str | os.PathLike,
    net: InceptionFeatures,
    *,
    need_fid: bool,
    need_sfid: bool,
    need_pr: bool,
    device: str,
    batch_size: int = 250,
    cache_dir: Path | None = None,
    progress: Callable[[int], None] | None = None,
) -> ReferenceData:
    """Everything the requested metrics need from a reference npz."""
    path = Path(path)
    try:
        keys = set(npz_keys(path))
    except Exception as exc:
        raise NpzFormatError(f"{path}: not an npz file ({exc})") from exc
    stored = "mu" in keys
    if stored and need_sfid and not {"mu_s", "sigma_s"} <= keys:
        raise NpzFormatError(f"{path}: has stored mu/sigma but no mu_s/sigma_s, so no sFID against it")
    if need_pr and IMAGE_KEY not in keys:
        raise NpzFormatError(f"{path}: reference has no images ('{IMAGE_KEY}'), which precision/recall needs")
    pool = spatial = None
    if stored:
        with np.load(path) as z:
            if need_fid:
                pool = GaussianStats(z["mu"].astype(np.float64), z["sigma"].astype(np.float64))
            if need_sfid:
                spatial = GaussianStats(z["mu_s"].astype(np.float64), z["sigma_s"].astype(np.float64))
    want_pool_stats = need_fid and not stored
    want_sp_stats = need_sfid and not stored
    if not (want_pool_stats or want_sp_stats or need_pr):
        return ReferenceData(pool, spatial, None, None, "stored")

    cache_dir = cache_dir or default_cache_dir()
    cache = cache_dir / f"{file_sha256(path)}-{net.weights_id}.npz"
    cached: dict[str, np.ndarray] = {}
    if cache.is_file():
        try:
            with np.load(cache) as z:
                cached = {k: z[k] for k in z.files}
        except Exception:
            cached = {}
    need_keys = (
        (["mu", "sigma"] if want_pool_stats else [])
        + (["mu_s", "sigma_s"] if want_sp_stats else [])
        + (["pool"] if need_pr else [])
    )
    if not all(k in cached for k in need_keys):
        with NpzImageReader(path) as reader:
            summ = extract(
                reader,
                net,
                device=device,
                batch_size=batch_size,
                pool_stats=True,
                spatial_stats=True,
                inception_score=False,
                keep_pool=True,
                progress=progress,
            )
        cached = {
            "mu": summ.pool_stats.mu,
            "sigma": summ.pool_stats.sigma,
            "mu_s": summ.spatial_stats.mu,
            "sigma_s": summ.spatial_stats.sigma,
            "pool": summ.pool_features,
        }
        _atomic_savez(cache, **cached)
    if want_pool_stats:
        pool = GaussianStats(cached["mu"], cached["sigma"])
    if want_sp_stats:
        spatial = GaussianStats(cached["mu_s"], cached["sigma_s"])
    feats = cached["pool"] if need_pr else None
    n = int(cached["pool"].shape[0]) if "pool" in cached else None
    return ReferenceData(pool, spatial, feats, n, "stored" if stored else "computed")
