"""`mixflow-bench eval`: any registered metrics (FID, sFID, IS, precision/recall, KID, FD-DINOv2, ...) of a sample
npz or image folder, through one evaluator of :mod:`mixflow_bench.metrics.registry`."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

import click
from rich.table import Table

from mixflow_bench.cli.common import console


def environment(device: str) -> dict:
    import torch

    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": device,
        "host": platform.node(),
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
    return env


def _atomic_write_json(path: Path, obj: dict) -> Path:
    from mixflow_bench.atomic import atomic_write_text

    return atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def writable_dir_problem(folder: Path) -> str | None:
    """Why files cannot be created in ``folder`` (or in the nearest existing folder above it), or None."""
    probe = folder
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        return f"{probe} is a file, not a folder"
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"{probe} is not writable"
    return None


def check_outputs(json_path: Path | None, results_dir: Path) -> None:
    """Refuses, before any work, a --json file or a results folder that cannot be written."""
    if json_path is not None:
        if json_path.is_dir():
            raise click.ClickException(f"--json {json_path}: is a folder; give a file name")
        problem = writable_dir_problem(json_path.parent)
        if problem is None and json_path.exists() and not os.access(json_path, os.W_OK):
            problem = f"{json_path} is not writable"
        if problem:
            raise click.ClickException(f"--json {json_path}: cannot write the result there ({problem})")
    problem = writable_dir_problem(results_dir)
    if problem:
        raise click.ClickException(
            f"--results-dir {results_dir}: cannot write the result record there ({problem}); pass another folder"
        )


def record_name(samples: Path, reference: Path | str, metrics: tuple[str, ...], evaluator: str, resize: str) -> str:
    """The default result name: the samples, the reference, the evaluator (and resize) and the metric set, so a
    second evaluation of the same samples with other metrics or another reference is a record of its own."""
    parts = [samples.stem if samples.suffix else samples.name, "vs", Path(str(reference)).stem or str(reference),
             evaluator + ("-clean" if resize == "clean" else ""), "+".join(metrics)]  # fmt: skip
    return "-".join(parts)


def save_result_record(payload: dict, name: str, results_dir: Path | None) -> Path:
    """Registers the result for `mixflow-bench table` (mixflow_bench.results.records)."""
    from mixflow_bench.results.records import make_record, save_record

    context = {k: v for k, v in payload.items() if k not in ("metrics", "num_samples", "kind", "protocol_evaluator")}
    context["name"] = name
    # the samples' sampler and guidance are not known here: only the evaluator and the sample count are stated
    context.setdefault("protocol", {"sampler": "unknown", "steps": "unknown", "nfe": "unknown", "guidance": "unknown",
                                    "num_samples": payload["num_samples"],
                                    "evaluator": payload.get("protocol_evaluator", "adm")})
    record = make_record(kind="eval", metrics=payload["metrics"], num_samples=payload["num_samples"], **context)
    return save_record(record, results_dir)


def result_table(result, samples: Path, reference: Path | str, evaluator: str) -> Table:
    from mixflow_bench.metrics.registry import METRICS

    n = result.num_samples
    who = "ADM" if evaluator == "adm" else evaluator
    title = f"{who} metrics: {samples.name} vs {Path(str(reference)).name} ({n:,} samples)"
    table = Table(title=title, min_width=len(title) + 4)
    table.add_column("metric")
    table.add_column("value", justify="right")
    labels = {}
    for m in METRICS.values():
        for key in m.keys:
            suffix = " (float32)" if key.endswith("_float32") else " (std)" if key.endswith("_std") else ""
            labels[key] = m.label + suffix
    for key, value in result.metrics.items():
        table.add_row(labels.get(key, key), f"{value:.6g}" if abs(value) < 1e-3 and value else f"{value:.4f}")
    return table


def _metrics_help() -> str:
    from mixflow_bench.metrics.registry import METRICS

    return "Comma-separated metrics: " + ", ".join(METRICS) + "."


@click.command(name="eval")
@click.option(
    "--samples",
    "samples",
    required=True,
    type=click.Path(path_type=Path),
    help="Sample npz (arr_0: uint8 N×H×W×3) or a folder of PNG/JPEG images.",
)
@click.option(
    "--ref",
    "ref",
    required=True,
    help="Reference npz (ADM reference batch), a folder of PNG/JPEG images (statistics cached by content) or a "
    "reference-batch artifact name.",
)
@click.option("--metrics", "metrics", default="fid,sfid,is,prec,rec", show_default=True, help=_metrics_help())
@click.option(
    "--evaluator",
    default="adm",
    show_default=True,
    help="adm (ADM's Inception pipeline) or torchmetrics (the κ-FC paper's torchmetrics FID; FID only).",
)
@click.option(
    "--json", "json_path", type=click.Path(path_type=Path), default=None, help="Write the result here."
)
@click.option(
    "--inception-weights",
    default=None,
    help="Inception weights: a .pth state dict or TF-named TorchScript file (default: torch-fidelity's). "
    "The result records their sha256 and whether it is that of the real TF-2015 network.",
)
@click.option("--device", default=None, help="cuda or cpu (default: cuda when available).")
@click.option(
    "--batch-size",
    default=None,
    type=click.IntRange(1),
    help="Images per batch (default: 250 on a GPU, 64 on the CPU, fewer for very large images).",
)
@click.option(
    "--fd-method",
    type=click.Choice(["auto", "scipy", "eigh"]),
    default="auto",
    show_default=True,
    help="Matrix square root: scipy (ADM's path) or float64 eigh on the device; auto = eigh on CUDA.",
)
@click.option(
    "--tf32/--no-tf32",
    default=False,
    show_default=True,
    help="Allow TF32 matmuls/convolutions for the Inception features (default strict float32).",
)
@click.option(
    "--resize",
    type=click.Choice(["tf1", "clean"]),
    default="tf1",
    show_default=True,
    help="adm: how images reach 299×299: tf1 (ADM's TF1 bilinear) or clean (clean-fid's PIL bicubic; recorded "
    "as its own protocol, not comparable with ADM numbers).",
)
@click.option(
    "--antialias/--no-antialias",
    default=True,
    show_default=True,
    help="torchmetrics: antialiased resize (torchmetrics >= 1.8) or TF1-style bilinear (before 1.8).",
)
@click.option(
    "--results-dir", type=click.Path(path_type=Path), default=None, help="Where the result record goes."
)
@click.option(
    "--dinov2-weights",
    default=None,
    help="fd-dinov2: DINOv2 ViT-L/14 weights, a local Hugging Face folder or dinov2-vit-l (the default, fetched "
    "into the artifact cache).",
)
@click.option(
    "--fd-dinov2",
    "fd_dinov2_weights",
    default=None,
    help="Also compute FD-DINOv2 with these weights (same as adding fd-dinov2 to --metrics with --dinov2-weights).",
)
@click.option(
    "--name",
    default=None,
    help="Result name (default: samples, reference, evaluator and metrics, so records of other metric sets do "
    "not replace each other).",
)
def command(
    samples: Path,
    ref: str,
    metrics: str,
    evaluator: str,
    json_path: Path | None,
    inception_weights: str | None,
    device: str | None,
    batch_size: int | None,
    fd_method: str,
    tf32: bool,
    resize: str,
    antialias: bool,
    results_dir: Path | None,
    dinov2_weights: str | None,
    fd_dinov2_weights: str | None,
    name: str | None,
) -> None:
    """Evaluate SAMPLES against a reference with any registered metrics; the adm evaluator computes them
    exactly as OpenAI's ADM evaluator does (float32 features).

    Precision and Recall are given twice. `precision`/`recall` compute distances in float16 first, as ADM's
    evaluator does, and are the numbers papers report; `precision_float32`/`recall_float32` use exact float32
    distances. float16 rounding makes more distances tie with a neighbourhood radius and count as inside, so the
    two differ by 1-2 points at a few hundred samples and far less at 50,000. The float16 values also depend on
    the backend's summation order: against ADM's own code on TF-CPU they differ by 1-2 images in 800.
    """
    import zipfile

    from mixflow_bench.metrics.inception import RANDOM_WEIGHTS
    from mixflow_bench.metrics.npz_stream import NpzFormatError
    from mixflow_bench.metrics.registry import check_metrics, evaluate, resolve_evaluator
    from mixflow_bench.results.records import STANDALONE_RESULTS_DIR

    if fd_dinov2_weights is not None:
        metrics = f"{metrics},fd-dinov2"
        dinov2_weights = dinov2_weights or fd_dinov2_weights
    try:
        evaluator = resolve_evaluator(evaluator).name
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--evaluator") from exc
    try:
        wanted = check_metrics(metrics, evaluator)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--metrics") from exc
    if inception_weights == RANDOM_WEIGHTS and not Path(inception_weights).exists():
        raise click.BadParameter(
            "random weights give no metric (they are for speed benchmarks: benchmarks/bench_eval.py); "
            "pass an Inception weights file or leave the option out",
            param_hint="--inception-weights",
        )
    check_outputs(json_path, results_dir or STANDALONE_RESULTS_DIR)
    if not samples.exists():
        raise click.ClickException(f"--samples {samples}: file or folder not found")
    from mixflow_bench.data.toy import resolve_toy_reference
    from mixflow_bench.metrics.adm import default_device

    device = device or default_device()
    try:
        result = evaluate(
            samples,
            resolve_toy_reference(ref),
            wanted,
            evaluator,
            # a path is never taken for an artifact name
            inception_weights=str(Path(inception_weights).resolve()) if inception_weights and Path(
                inception_weights).exists() else inception_weights,  # fmt: skip
            device=device,
            batch_size=batch_size,
            fd_method=fd_method,
            tf32=tf32,
            resize=resize,
            antialias=antialias,
            dinov2_weights=dinov2_weights,
            warn=lambda line: console.print(f"warning: {line}", highlight=False),
        )
    except (NpzFormatError, ValueError, OSError, RuntimeError, zipfile.BadZipFile) as exc:
        raise click.ClickException(str(exc)) from exc
    console.print(result_table(result, samples, ref, evaluator))
    for note in result.notes:
        console.print(f"note: {note}", highlight=False)
    protocol_evaluator = evaluator + ("-clean-resize" if resize == "clean" and evaluator == "adm" else "")
    payload = {
        "kind": "eval",
        "metrics": result.metrics,
        "num_samples": result.num_samples,
        "samples": str(samples),
        "reference": str(ref),
        "evaluator": evaluator,
        "protocol_evaluator": protocol_evaluator,
        "num_reference_images": result.num_reference_images,
        "reference_stats": result.reference_stats,
        "settings": result.settings,
        "inception_weights": result.weights,
        "timings": result.timings,
        "environment": environment(device),
    }
    if result.notes:
        payload["note"] = "; ".join(result.notes)
    if json_path is not None:
        _atomic_write_json(json_path, payload)
        console.print(f"wrote {json_path}")
    rec = save_result_record(payload, name or record_name(samples, ref, wanted, evaluator, resize), results_dir)
    console.print(f"result record: {rec}")
