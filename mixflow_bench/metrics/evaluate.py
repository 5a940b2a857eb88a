"""ADM-equivalent evaluation of a sample npz against a reference npz: FID, sFID, IS, precision, recall."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from mixflow_bench.metrics.features import extract
from mixflow_bench.metrics.frechet import frechet_distance
from mixflow_bench.metrics.inception import InceptionFeatures, load_inception
from mixflow_bench.metrics.npz_stream import NpzImageReader
from mixflow_bench.metrics.precision_recall import precision_recall
from mixflow_bench.metrics.reference import load_reference

ALL_METRICS = ("fid", "sfid", "is", "prec", "rec")
RESULT_KEYS = {"fid": "fid", "sfid": "sfid", "is": "is", "prec": "precision", "rec": "recall"}
FULL_COUNT = 50_000


@dataclass
class EvalResult:
    metrics: dict[str, float]  # keys: fid, sfid, is, precision, recall
    num_samples: int
    num_reference_images: int | None
    reference_stats: str
    timings: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    settings: dict[str, object] = field(default_factory=dict)


def parse_metrics(spec: str | Sequence[str]) -> tuple[str, ...]:
    """'fid,sfid,is,prec,rec' (any subset, any order) -> a validated tuple in canonical order."""
    items = [s.strip().lower() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    aliases = {"precision": "prec", "recall": "rec", "inception_score": "is", "pr": "prec"}
    names = {aliases.get(s, s) for s in items}
    if "pr" in items:
        names.add("rec")
    bad = names - set(ALL_METRICS)
    if bad or not names:
        raise ValueError(f"unknown metrics {sorted(bad) or items}; choose from {', '.join(ALL_METRICS)}")
    return tuple(m for m in ALL_METRICS if m in names)


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def count_note(n: int) -> str | None:
    if n < FULL_COUNT:
        return f"computed on {n:,} samples, fewer than the {FULL_COUNT:,} that published numbers use"
    return None


def evaluate(
    samples: str | os.PathLike,
    reference: str | os.PathLike,
    metrics: Sequence[str] = ALL_METRICS,
    *,
    net: InceptionFeatures | None = None,
    weights: str | None = None,
    device: str | None = None,
    batch_size: int = 250,
    pr_mode: str = "adm",
    fd_method: str = "auto",
    cache_dir: Path | None = None,
    tf32: bool = False,
    show_progress: bool = True,
) -> EvalResult:
    """Evaluates ``samples`` (npz, arr_0 uint8 NHWC) against ``reference`` (ADM reference batch or images)."""
    metrics = parse_metrics(metrics)
    device = device or default_device()
    if pr_mode not in ("adm", "exact"):
        raise ValueError(f"pr_mode must be 'adm' or 'exact', got {pr_mode!r}")
    if fd_method == "auto":
        fd_method = "eigh" if device.startswith("cuda") else "scipy"
    need_fid, need_sfid, need_is = "fid" in metrics, "sfid" in metrics, "is" in metrics
    need_pr = "prec" in metrics or "rec" in metrics
    timings: dict[str, float] = {}
    prev_tf32 = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    try:
        reader = NpzImageReader(samples)  # validate the sample file before any heavy work
        t = time.perf_counter()
        if net is None:
            net = load_inception(weights, device)
        timings["load_network"] = time.perf_counter() - t
        from mixflow_bench.progress import progress_bar

        t = time.perf_counter()
        ref = None
        if need_fid or need_sfid or need_pr:
            with progress_bar("reference images", show_progress) as bar:
                ref = load_reference(
                    reference,
                    net,
                    need_fid=need_fid,
                    need_sfid=need_sfid,
                    need_pr=need_pr,
                    device=device,
                    batch_size=batch_size,
                    cache_dir=cache_dir,
                    progress=bar,
                )
        timings["reference"] = time.perf_counter() - t
        with reader, progress_bar("sample images", show_progress, total=reader.num_images) as bar:
            summ = extract(
                reader,
                net,
                device=device,
                batch_size=batch_size,
                pool_stats=need_fid,
                spatial_stats=need_sfid,
                inception_score=need_is,
                keep_pool=need_pr,
                progress=bar,
            )
        timings["features"] = summ.seconds
        out: dict[str, float] = {}
        if need_is:
            out["is"] = summ.inception_score
        if need_fid:
            t = time.perf_counter()
            out["fid"] = frechet_distance(summ.pool_stats, ref.pool_stats, fd_method, device)
            timings["fid"] = time.perf_counter() - t
        if need_sfid:
            t = time.perf_counter()
            out["sfid"] = frechet_distance(summ.spatial_stats, ref.spatial_stats, fd_method, device)
            timings["sfid"] = time.perf_counter() - t
        if need_pr:
            t = time.perf_counter()
            pr = precision_recall(
                torch.as_tensor(ref.pool_features, device=device),
                torch.as_tensor(summ.pool_features, device=device),
                mode=pr_mode,
            )
            if "prec" in metrics:
                out["precision"] = pr.precision
            if "rec" in metrics:
                out["recall"] = pr.recall
            timings["precision_recall"] = time.perf_counter() - t
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = prev_tf32
    notes = [n for n in [count_note(summ.count)] if n]
    ordered = {RESULT_KEYS[m]: out[RESULT_KEYS[m]] for m in metrics}
    return EvalResult(
        metrics=ordered,
        num_samples=summ.count,
        num_reference_images=ref.num_images if ref else None,
        reference_stats=ref.stats_source if ref else "none",
        timings=timings,
        notes=notes,
        settings={
            "pr_mode": pr_mode,
            "fd_method": fd_method,
            "device": device,
            "tf32": tf32,
            "batch_size": batch_size,
            "weights": net.weights_id,
            "precision": "float32" + (" (TF32 matmuls)" if tf32 else ""),
        },
    )
