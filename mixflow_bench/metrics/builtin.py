"""The built-in evaluators (adm, torchmetrics) and metrics (FID, sFID, IS, precision/recall, KID, FD-DINOv2,
fd-data), registered in :mod:`mixflow_bench.metrics.registry` when ``mixflow_bench.metrics`` is imported.
Implementations are imported on first use."""

from __future__ import annotations

from pathlib import Path

from mixflow_bench.metrics.options import EvalOptions, EvalResult
from mixflow_bench.metrics.registry import Evaluator, Metric, register_evaluator, register_metric


def _run_adm(samples: Path, reference: Path, metrics: tuple[str, ...], opts: EvalOptions) -> EvalResult:
    from mixflow_bench.metrics.adm import evaluate_adm
    from mixflow_bench.metrics.inputs import weights_file

    return evaluate_adm(
        samples, reference, metrics, net=opts.net, weights=weights_file(opts.inception_weights), device=opts.device,
        batch_size=opts.batch_size, fd_method=opts.fd_method, cache_dir=opts.cache_dir, tf32=opts.tf32,
        resize=opts.resize, show_progress=opts.show_progress, warn=opts.warn,
    )  # fmt: skip


def _run_torchmetrics(samples: Path, reference: Path, metrics: tuple[str, ...], opts: EvalOptions) -> EvalResult:
    from mixflow_bench.metrics.torchmetrics_fid import run_evaluator

    return run_evaluator(samples, reference, metrics, opts)


def _fd_dinov2(samples: Path, reference: Path, opts: EvalOptions) -> dict[str, float]:
    from mixflow_bench.hub.registry import FD_DINOV2_ARTIFACT
    from mixflow_bench.metrics.dinov2 import fd_dinov2

    device = opts.device or _default_device()
    weights = opts.dinov2_weights or FD_DINOV2_ARTIFACT
    return {"fd_dinov2": fd_dinov2(samples, reference, weights, device, opts.batch_size or 100)}


def _fd_data(samples: Path, reference: Path, opts: EvalOptions) -> dict[str, float]:
    from mixflow_bench.metrics.data_fd import fd_data

    return {"fd-data": fd_data(samples, reference)}


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


_INCEPTION = ("inception-torch-fidelity",)  # hub.registry.INCEPTION_ARTIFACT (not imported: keeps this light)
register_evaluator(Evaluator(
    "adm", "OpenAI's ADM evaluator re-implemented on torch-fidelity's Inception (float32)", _run_adm, _INCEPTION))
register_evaluator(Evaluator(
    "torchmetrics", "torchmetrics FrechetInceptionDistance(normalize=True), as the κ-FC paper runs it",
    _run_torchmetrics, _INCEPTION, aliases=("torchmetrics-train",)))
_ADM = ("adm",)
register_metric(Metric("fid", "FID", ("fid",), ("adm", "torchmetrics"), description="Fréchet Inception distance"))
register_metric(Metric("sfid", "sFID", ("sfid",), _ADM, description="Fréchet distance of mixed_6/conv features"))
register_metric(Metric("is", "Inception Score", ("is",), _ADM, aliases=("inception_score", "isc")))
register_metric(Metric("prec", "Precision", ("precision", "precision_float32"), _ADM, aliases=("precision",)))
register_metric(Metric("rec", "Recall", ("recall", "recall_float32"), _ADM, aliases=("recall",)))
register_metric(Metric("kid", "KID", ("kid", "kid_std"), _ADM,
                       description="kernel Inception distance (torch-fidelity's: cubic polynomial kernel, subsets)"))
register_metric(Metric("fd-dinov2", "FD-DINOv2", ("fd_dinov2",), compute=_fd_dinov2, artifacts=("dinov2-vit-l",),
                       description="Fréchet distance of DINOv2 ViT-L/14 features"))
register_metric(Metric("fd-data", "FD (data)", ("fd-data",), compute=_fd_data,
                       description="data-space Fréchet distance of the toy decode's gray images"))
