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
from mixflow_bench.hub.cache import hub_home
from mixflow_bench.metrics.features import extract
from mixflow_bench.metrics.frechet import GaussianStats
from mixflow_bench.metrics.inception import POOL_DIM, SPATIAL_DIM, InceptionFeatures
from mixflow_bench.metrics.npz_stream import IMAGE_KEY, NpzFormatError, NpzImageReader, npz_array_headers
from mixflow_bench.metrics.precision_recall import K_NEIGHBOURS

STAT_SHAPES = {
    "mu": (POOL_DIM,),
    "sigma": (POOL_DIM, POOL_DIM),
    "mu_s": (SPATIAL_DIM,),
    "sigma_s": (SPATIAL_DIM, SPATIAL_DIM),
}
MIN_IMAGES_STATS = 2  # a covariance needs two vectors
MIN_IMAGES_PR = K_NEIGHBOURS + 1  # a k-th neighbour besides the point itself


@dataclass
class ReferenceData:
    pool_stats: GaussianStats | None
    spatial_stats: GaussianStats | None
    pool_features: np.ndarray | None
    num_images: int | None  # images in arr_0 (None when there are none)
    stats_source: str  # "stored" (the file's mu/sigma) or "computed" (from arr_0)


@dataclass
class ReferenceInfo:
    """What a reference npz offers, read from its array headers only."""

    path: Path
    stored: bool  # ADM's whole-dataset mu/sigma are in the file
    num_images: int | None  # images in arr_0 when the requested metrics use them
    image_size: tuple[int, int] | None = None  # (H, W) of those images


def inspect_reference(path: str | os.PathLike, *, need_fid: bool, need_sfid: bool, need_pr: bool) -> ReferenceInfo:
    """Checks, without reading any data, that the reference has what the requested metrics need."""
    path = Path(path)
    headers = npz_array_headers(path)
    stored = "mu" in headers
    wanted_stats = (["mu", "sigma"] if need_fid else []) + (["mu_s", "sigma_s"] if need_sfid else [])
    if stored:
        if need_sfid and not {"mu_s", "sigma_s"} <= set(headers):
            raise NpzFormatError(f"{path}: has stored mu/sigma but no mu_s/sigma_s, so no sFID against it")
        for key in wanted_stats:
            if key not in headers:
                raise NpzFormatError(f"{path}: has stored 'mu' but no '{key}'")
            shape = headers[key][0]
            if shape != STAT_SHAPES[key]:
                raise NpzFormatError(
                    f"{path}: '{key}' has shape {shape}, expected {STAT_SHAPES[key]} (ADM Inception statistics)"
                )
    needs_images = need_pr or (bool(wanted_stats) and not stored)
    if not needs_images:
        size = None
        if IMAGE_KEY in headers and len(headers[IMAGE_KEY][0]) == 4:  # for the resolution check only
            size = tuple(int(v) for v in headers[IMAGE_KEY][0][1:3])
        return ReferenceInfo(path, stored, None, size)
    if IMAGE_KEY not in headers:
        if need_pr:
            raise NpzFormatError(
                f"{path}: reference has no images ('{IMAGE_KEY}'), which precision/recall needs"
            )
        raise NpzFormatError(f"{path}: reference has neither stored statistics ('mu', 'sigma') nor images")
    with NpzImageReader(path) as reader:  # dtype, layout and length of arr_0
        n, size = reader.num_images, reader.shape[1:3]
    need, why = (MIN_IMAGES_PR, "precision/recall") if need_pr else (MIN_IMAGES_STATS, "its statistics")
    if n < need:
        raise NpzFormatError(f"{path}: reference has {n} images; {why} need at least {need}")
    return ReferenceInfo(path, stored, n, size)


def default_cache_dir() -> Path:
    """Where reference statistics are cached: ``$MIXFLOW_BENCH_HOME/ref-stats`` (``$MIXFLOW_BENCH_CACHE/ref-stats``
    when that is set, to keep them apart from the downloads)."""
    override = os.environ.get("MIXFLOW_BENCH_CACHE")
    return (Path(override).expanduser() if override else hub_home()) / "ref-stats"


_SHA_MEMO: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file, remembered per (path, size, mtime) within the process."""
    st = os.stat(path)
    key = (str(Path(path).resolve()), st.st_size, st.st_mtime_ns)
    if key not in _SHA_MEMO:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
        _SHA_MEMO[key] = h.hexdigest()
    return _SHA_MEMO[key]


def _atomic_savez(path: Path, **arrays: np.ndarray) -> None:
    atomic_write(path, lambda f: np.savez(f, **arrays))


def _cache_keys(stored: bool, need_fid: bool, need_sfid: bool, need_pr: bool) -> list[str]:
    return (
        (["mu", "sigma"] if need_fid and not stored else [])
        + (["mu_s", "sigma_s"] if need_sfid and not stored else [])
        + (["pool"] if need_pr else [])
    )


def _cache_path(path: Path, net: InceptionFeatures, cache_dir: Path | None) -> Path:
    features = getattr(net, "features_id", net.weights_id)  # weights and resize
    return (cache_dir or default_cache_dir()) / f"{file_sha256(path)}-{features}.npz"


def _read_cache(cache: Path) -> dict[str, np.ndarray]:
    if not cache.is_file():
        return {}
    try:
        with np.load(cache) as z:
            return {k: z[k] for k in z.files}
    except Exception:  # a damaged cache is recomputed
        return {}


def reference_images_to_run(
    info: ReferenceInfo,
    net: InceptionFeatures,
    *,
    need_fid: bool,
    need_sfid: bool,
    need_pr: bool,
    cache_dir: Path | None = None,
) -> int:
    """How many reference images :func:`load_reference` will run through the network (0: stored or cached)."""
    keys = _cache_keys(info.stored, need_fid, need_sfid, need_pr)
    if not keys:
        return 0
    cache = _cache_path(info.path, net, cache_dir)
    if not cache.is_file():
        return info.num_images or 0
    try:
        with np.load(cache) as z:
            return 0 if set(keys) <= set(z.files) else info.num_images or 0
    except Exception:
        return info.num_images or 0


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
    info = inspect_reference(path, need_fid=need_fid, need_sfid=need_sfid, need_pr=need_pr)
    stored = info.stored
    pool = spatial = None
    if stored:
        with np.load(path) as z:
            if need_fid:
                pool = GaussianStats(z["mu"].astype(np.float64), z["sigma"].astype(np.float64))
            if need_sfid:
                spatial = GaussianStats(z["mu_s"].astype(np.float64), z["sigma_s"].astype(np.float64))
    need_keys = _cache_keys(stored, need_fid, need_sfid, need_pr)
    if not need_keys:
        return ReferenceData(pool, spatial, None, None, "stored")
    want_pool_stats, want_sp_stats = "mu" in need_keys, "mu_s" in need_keys
    cache = _cache_path(path, net, cache_dir)
    cached = _read_cache(cache)
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
    n = int(cached["pool"].shape[0]) if "pool" in cached else None
    if want_pool_stats:
        pool = GaussianStats(cached["mu"], cached["sigma"], count=n or 0)
    if want_sp_stats:
        spatial = GaussianStats(cached["mu_s"], cached["sigma_s"], count=n or 0)
    feats = cached["pool"] if need_pr else None
    return ReferenceData(pool, spatial, feats, n, "stored" if stored else "computed")
