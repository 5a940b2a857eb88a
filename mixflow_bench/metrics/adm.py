"""The ``adm`` evaluator: ADM-equivalent FID, sFID, IS, precision, recall (and KID) of a sample npz against a
reference npz.

Everything that can be checked without the network (files, array layouts and lengths against the metrics asked
for, the weights' layers) is checked first, so a bad input fails in seconds with one line naming the file.
Precision/recall are reported twice: ``precision``/``recall`` with ADM's float16 distances (what papers
report) and ``precision_float32``/``recall_float32`` with exact float32 distances. The float16 values depend on
the backend's summation order: against ADM's own code on TF-CPU they differ by 1–2 images in 800.
KID (torch-fidelity's definition, :mod:`mixflow_bench.metrics.kid`) uses the same pool3 features as P/R.
Registered as evaluator ``adm`` in :mod:`mixflow_bench.metrics.registry`, which is the entry point.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from mixflow_bench.metrics.features import extract
from mixflow_bench.metrics.frechet import SingularCovarianceWarning, frechet_distance
from mixflow_bench.metrics.inception import RESIZE_MODES, InceptionFeatures, load_inception, resize_chunk
from mixflow_bench.metrics.kid import kid
from mixflow_bench.metrics.npz_stream import NpzFormatError, NpzImageReader, verify_npz
from mixflow_bench.metrics.options import EvalResult
from mixflow_bench.metrics.precision_recall import precision_recall
from mixflow_bench.metrics.reference import (
    MIN_IMAGES_PR,
    MIN_IMAGES_STATS,
    ReferenceInfo,
    inspect_reference,
    load_reference,
    reference_images_to_run,
)
from mixflow_bench.metrics.registry import check_metrics

ALL_METRICS = ("fid", "sfid", "is", "prec", "rec")
FULL_COUNT = 50_000
CUDA_BATCH = 250
CPU_BATCH = 64  # Inception activations at 299² take ~10 MB an image on the CPU
HOST_BUFFER_BYTES = 384 << 20  # the three uint8 read-ahead buffers of a pass, together


def parse_metrics(spec: str | Sequence[str]) -> tuple[str, ...]:
    """'fid,sfid,is,prec,rec' (any subset of the adm evaluator's metrics, any order) -> a validated tuple."""
    return check_metrics(spec, "adm")


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
    warnings: list[str]


def check_inputs(
    samples: str | os.PathLike, reference: str | os.PathLike, metrics: Sequence[str], *, verify: bool = True
) -> InputCheck:
    """Validates both files against the metrics asked for; raises NpzFormatError with one line naming the file.

    Headers first; then (``verify``) every byte of the image data that will be read is CRC-checked, so damaged
    data fails in seconds rather than after a long pass. A sample resolution other than the reference images'
    is returned as a warning."""
    metrics = parse_metrics(metrics)
    need_fd = "fid" in metrics or "sfid" in metrics
    need_pr = "prec" in metrics or "rec" in metrics
    need_kid = "kid" in metrics
    with NpzImageReader(samples) as reader:
        n, shape = reader.num_images, reader.shape
    needs = {"FID/sFID": MIN_IMAGES_STATS if need_fd else 0, "precision/recall": MIN_IMAGES_PR if need_pr else 0,
             "KID": MIN_IMAGES_STATS if need_kid else 0,
             "the Inception Score": 1 if "is" in metrics else 0}  # fmt: skip
    for what, least in needs.items():
        if n < least:
            raise NpzFormatError(f"{samples}: has {n} images; {what} needs at least {least}")
    ref = None
    if need_fd or need_pr or need_kid:
        ref = inspect_reference(
            reference, need_fid="fid" in metrics, need_sfid="sfid" in metrics, need_pr=need_pr or need_kid
        )
    found: list[str] = []
    if ref is not None and ref.image_size and tuple(ref.image_size) != tuple(shape[1:3]):
        (rh, rw), (sh, sw) = ref.image_size, shape[1:3]
        found.append(
            f"the samples are {sw}×{sh} but the reference images are {rw}×{rh}: the metrics compare different "
            "resolutions (the network resizes both to 299×299)"
        )
    if verify:
        verify_npz(samples)
        if ref is not None and ref.num_images:
            verify_npz(reference)
    return InputCheck(n, shape, ref, found)


def count_note(n: int) -> str | None:
    if n < FULL_COUNT:
        return f"computed on {n:,} samples, fewer than the {FULL_COUNT:,} that published numbers use"
    return None


def evaluate_adm(
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
    resize: str = "tf1",
    show_progress: bool = True,
    warn: Callable[[str], None] | None = None,
) -> EvalResult:
    """Evaluates ``samples`` (npz, arr_0 uint8 NHWC) against ``reference`` (ADM reference batch or images).

    ``batch_size`` None: :func:`default_batch_size`. ``resize``: ``tf1`` (ADM's graph) or ``clean`` (clean-fid's
    PIL bicubic; a different protocol). Bad inputs raise NpzFormatError/ValueError/FileNotFoundError before any
    image goes through the network; a resolution mismatch goes to ``warn`` (default ``warnings.warn``)."""
    metrics = parse_metrics(metrics)
    device = device or default_device()
    if fd_method == "auto":
        fd_method = "eigh" if device.startswith("cuda") else "scipy"
    if fd_method not in ("scipy", "eigh"):
        raise ValueError(f"unknown Fréchet method {fd_method!r} (scipy or eigh)")
    if resize not in RESIZE_MODES:
        raise ValueError(f"unknown resize {resize!r} ({', '.join(RESIZE_MODES)})")
    need_fid, need_sfid, need_is = "fid" in metrics, "sfid" in metrics, "is" in metrics
    need_pr, need_kid = "prec" in metrics or "rec" in metrics, "kid" in metrics
    need_ref_pool = need_pr or need_kid
    checked = check_inputs(samples, reference, metrics)
    notes: list[str] = list(checked.warnings)
    for line in checked.warnings:
        (warn or (lambda m: warnings.warn(m, stacklevel=3)))(line)
    if batch_size is None:
        _, h, w, _ = checked.sample_shape
        if checked.reference is not None and checked.reference.image_size:
            h, w = max(h, checked.reference.image_size[0]), max(w, checked.reference.image_size[1])
        batch_size = default_batch_size(device, h, w)
    timings: dict[str, float] = {}
    t = time.perf_counter()
    if net is None:
        net = load_inception(weights, device)
    if resize != "tf1":
        net.resize = resize
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
    kid_settings: dict[str, object] = {}
    try:
        t = time.perf_counter()
        ref = None
        if checked.reference is not None:
            todo = reference_images_to_run(
                checked.reference, net, need_fid=need_fid, need_sfid=need_sfid, need_pr=need_ref_pool,
                cache_dir=cache_dir,
            )  # fmt: skip
            with progress_bar("reference images", show_progress and todo > 0, total=todo or None) as bar:
                ref = load_reference(
                    reference,
                    net,
                    need_fid=need_fid,
                    need_sfid=need_sfid,
                    need_pr=need_ref_pool,
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
                keep_pool=need_ref_pool,
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
        if need_kid:
            t = time.perf_counter()
            k = kid(summ.pool_features, ref.pool_features)
            out["kid"], out["kid_std"] = k.mean, k.std
            kid_settings = k.settings()
            timings["kid"] = time.perf_counter() - t
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
    if resize != "tf1":
        notes.append("clean-fid's resize (PIL bicubic): a different protocol, not comparable with ADM's numbers")
    settings: dict[str, object] = {
        "evaluator": "adm",
        "pr_modes": {"precision, recall": "adm (float16 distances, float32 fallback)",
                     "precision_float32, recall_float32": "float32 distances"},
        "fd_method": fd_method,
        "device": device,
        "tf32": tf32,
        "batch_size": batch_size,
        "resize_chunk": resize_chunk(*checked.sample_shape[1:3]),
        "weights": net.weights_id,
        "precision": "float32" + (" (TF32 matmuls)" if tf32 else ""),
        "resize": RESIZE_MODES[resize],
    }  # fmt: skip
    if kid_settings:
        settings["kid"] = kid_settings
    return EvalResult(
        metrics=out,
        num_samples=summ.count,
        num_reference_images=ref.num_images if ref else None,
        reference_stats=ref.stats_source if ref else "none",
        timings=timings,
        notes=notes,
        settings=settings,
        weights=weights_info,
    )
