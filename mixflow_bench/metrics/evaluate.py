"""ADM-equivalent evaluation of a sample npz against a reference npz: FID, sFID, IS, precision, recall.

Everything that can be checked without the network (files, array layouts and lengths against the metrics asked
for, the weights' layers) is checked first, so a bad input fails in seconds with one line naming the file.
Precision/recall are reported twice: ``precision``/``recall`` with ADM's float16 distances (what papers
report) and ``precision_float32``/``recall_float32`` with exact float32 distances.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from mixflow_bench.metrics.features import extract
from mixflow_bench.metrics.frechet import SingularCovarianceWarning, frechet_distance
from mixflow_bench.metrics.inception import InceptionFeatures, load_inception, resize_chunk
from mixflow_bench.metrics.npz_stream import NpzFormatError, NpzImageReader
from mixflow_bench.metrics.precision_recall import precision_recall
from mixflow_bench.metrics.reference import (
    MIN_IMAGES_PR,
    MIN_IMAGES_STATS,
    ReferenceInfo,
    inspect_reference,
    load_reference,
    reference_images_to_run,
)

ALL_METRICS = ("fid", "sfid", "is", "prec", "rec")
RESULT_KEYS = {"fid": "fid", "sfid": "sfid", "is": "is", "prec": "precision", "rec": "recall"}
FLOAT32_KEYS = {"prec": "precision_float32", "rec": "recall_float32"}
FULL_COUNT = 50_000
CUDA_BATCH = 250
CPU_BATCH = 64  # Inception activations at 299² take ~10 MB an image on the CPU
HOST_BUFFER_BYTES = 384 << 20  # the three uint8 read-ahead buffers of a pass, together


@dataclass
class EvalResult:
    metrics: dict[str, float]  # keys: fid, sfid, is, precision, recall, precision_float32, recall_float32
    num_samples: int
    num_reference_images: int | None
    reference_stats: str
    timings: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    settings: dict[str, object] = field(default_factory=dict)
    weights: dict[str, object] = field(default_factory=dict)  # id, sha256, real_network, source


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


def default_batch_size(device: str, height: int, width: int) -> int:
    """Images per batch: 250 on a GPU, 64 on the CPU (peak RSS well under 4 GB), fewer for very large images
    so that the read-ahead buffers stay within a fixed budget."""
    base = CUDA_BATCH if str(device).startswith("cuda") else CPU_BATCH
    per_image = 3 * height * width * 3  # three uint8 buffers
    return max(1, min(base, HOST_BUFFER_BYTES // per_image))


@dataclass
class InputCheck:
    """What the input checks found: the sample count and shape, and the reference's contents."""

    num_samples: int
    sample_shape: tuple[int, int, int, int]
    reference: ReferenceInfo | None


def check_inputs(
    samples: str | os.PathLike, reference: str | os.PathLike, metrics: Sequence[str]
) -> InputCheck:
    """Validates both files against the metrics asked for, reading headers only; raises NpzFormatError."""
    metrics = parse_metrics(metrics)
    need_fd = "fid" in metrics or "sfid" in metrics
    need_pr = "prec" in metrics or "rec" in metrics
    with NpzImageReader(samples) as reader:
        n, shape = reader.num_images, reader.shape
    needs = {"FID/sFID": MIN_IMAGES_STATS if need_fd else 0, "precision/recall": MIN_IMAGES_PR if need_pr else 0,
             "the Inception Score": 1 if "is" in metrics else 0}  # fmt: skip
    for what, least in needs.items():
        if n < least:
            raise NpzFormatError(f"{samples}: has {n} images; {what} needs at least {least}")
    ref = None
    if need_fd or need_pr:
        ref = inspect_reference(
            reference, need_fid="fid" in metrics, need_sfid="sfid" in metrics, need_pr=need_pr
        )
    return InputCheck(n, shape, ref)


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
    batch_size: int | None = None,
    fd_method: str = "auto",
    cache_dir: Path | None = None,
    tf32: bool = False,
    show_progress: bool = True,
) -> EvalResult:
    """Evaluates ``samples`` (npz, arr_0 uint8 NHWC) against ``reference`` (ADM reference batch or images).

    ``batch_size`` None: :func:`default_batch_size`. Bad inputs raise NpzFormatError/ValueError/FileNotFoundError
    before any image goes through the network."""
    metrics = parse_metrics(metrics)
    device = device or default_device()
    if fd_method == "auto":
        fd_method = "eigh" if device.startswith("cuda") else "scipy"
    if fd_method not in ("scipy", "eigh"):
        raise ValueError(f"unknown Fréchet method {fd_method!r} (scipy or eigh)")
    need_fid, need_sfid, need_is = "fid" in metrics, "sfid" in metrics, "is" in metrics
    need_pr = "prec" in metrics or "rec" in metrics
    checked = check_inputs(samples, reference, metrics)
    if batch_size is None:
        _, h, w, _ = checked.sample_shape
        if checked.reference is not None and checked.reference.image_size:
            h, w = max(h, checked.reference.image_size[0]), max(w, checked.reference.image_size[1])
        batch_size = default_batch_size(device, h, w)
    timings: dict[str, float] = {}
    t = time.perf_counter()
    if net is None:
        net = load_inception(weights, device)
    timings["load_network"] = time.perf_counter() - t
    problem = getattr(net, "logits_problem", None) or (None if net.has_logits else "no 1008-class output layer")
    if need_is and problem:
        raise ValueError(
            f"no Inception Score from the Inception weights {getattr(net, 'source', '')}: {problem}; "
            "leave 'is' out of --metrics or use torch-fidelity's weights"
        )
    from mixflow_bench.progress import progress_bar

    prev_tf32 = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    notes: list[str] = []
    try:
        t = time.perf_counter()
        ref = None
        if checked.reference is not None:
            todo = reference_images_to_run(
                checked.reference, net, need_fid=need_fid, need_sfid=need_sfid, need_pr=need_pr, cache_dir=cache_dir
            )
            with progress_bar("reference images", show_progress and todo > 0, total=todo or None) as bar:
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
        with NpzImageReader(samples) as reader, progress_bar(
            "sample images", show_progress, total=reader.num_images
        ) as bar:
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
        for name, key, a, b in (
            ("FID", "fid", summ.pool_stats, ref.pool_stats if ref else None),
            ("sFID", "sfid", summ.spatial_stats, ref.spatial_stats if ref else None),
        ):
            if key not in metrics:
                continue
            t = time.perf_counter()
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", SingularCovarianceWarning)
                out[key] = frechet_distance(a, b, fd_method, device)
            for w in caught:
                if issubclass(w.category, SingularCovarianceWarning):
                    notes.append(f"{name}: {w.message}")
                else:
                    warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
            timings[key] = time.perf_counter() - t
        if need_pr:
            t = time.perf_counter()
            ref_feats = torch.as_tensor(ref.pool_features, device=device)
            smp_feats = torch.as_tensor(summ.pool_features, device=device)
            adm = precision_recall(ref_feats, smp_feats, mode="adm")
            exact = precision_recall(ref_feats, smp_feats, mode="exact")
            if "prec" in metrics:
                out["precision"], out["precision_float32"] = adm.precision, exact.precision
            if "rec" in metrics:
                out["recall"], out["recall_float32"] = adm.recall, exact.recall
            timings["precision_recall"] = time.perf_counter() - t
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = prev_tf32
    notes = [n for n in [count_note(summ.count)] if n] + notes
    describe = getattr(net, "describe", None)
    weights_info = describe() if describe else {"id": net.weights_id, "real_network": False}
    if not weights_info.get("real_network"):
        notes.append(
            f"Inception weights {weights_info.get('source', weights_info['id'])} are not a known TF-2015 "
            "Inception-v3 file (by sha256): the values are not comparable with published ones"
        )
    ordered: dict[str, float] = {}
    for m in metrics:
        ordered[RESULT_KEYS[m]] = out[RESULT_KEYS[m]]
        if m in FLOAT32_KEYS:
            ordered[FLOAT32_KEYS[m]] = out[FLOAT32_KEYS[m]]
    return EvalResult(
        metrics=ordered,
        num_samples=summ.count,
        num_reference_images=ref.num_images if ref else None,
        reference_stats=ref.stats_source if ref else "none",
        timings=timings,
        notes=notes,
        settings={
            "pr_modes": {"precision, recall": "adm (float16 distances, float32 fallback)",
                         "precision_float32, recall_float32": "float32 distances"},
            "fd_method": fd_method,
            "device": device,
            "tf32": tf32,
            "batch_size": batch_size,
            "resize_chunk": resize_chunk(*checked.sample_shape[1:3]),
            "weights": net.weights_id,
            "precision": "float32" + (" (TF32 matmuls)" if tf32 else ""),
        },  # fmt: skip
        weights=weights_info,
    )
