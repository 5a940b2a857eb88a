"""`mixflow-bench eval`: ADM-equivalent FID / sFID / IS / precision / recall of a sample npz."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
from pathlib import Path

import click
from rich.table import Table

from mixflow_bench.cli.common import console

REFERENCE_KINDS = ("reference-batch",)


def resolve_reference(ref: str) -> Path:
    """A path, or the name of a reference-batch artifact (e.g. ``adm-ref-imagenet256``) fetched through
    ``mixflow_bench.hub``; other artifacts (checkpoints, weights) are refused before any download."""
    p = Path(ref)
    if p.is_dir():
        raise click.ClickException(
            f"--ref {ref}: is a folder, not an npz file; pack its PNGs first: mixflow-bench pack {ref} "
            f"{p.name or 'reference'}.npz"
        )
    if p.exists() or ref.endswith(".npz") or os.sep in ref:
        if not p.is_file():
            raise click.ClickException(f"reference file not found: {ref}")
        return p
    try:
        from mixflow_bench.hub import fetch, registry
    except ImportError as exc:
        raise click.ClickException(
            f"'{ref}' is not a file and artifact names need mixflow_bench.hub, which is not available "
            f"({exc}); pass the path of the reference npz instead"
        ) from exc
    known = registry()
    batches = sorted(n for n, a in known.items() if a.kind in REFERENCE_KINDS)
    if ref not in known:
        raise click.ClickException(
            f"--ref {ref!r} is neither a file nor a reference batch; reference batches: {', '.join(batches)}"
        )
    if known[ref].kind not in REFERENCE_KINDS:
        raise click.ClickException(
            f"--ref {ref!r} is a {known[ref].kind}, not a reference batch; use one of {', '.join(batches)} "
            "or the path of a reference npz"
        )
    try:
        return Path(fetch(ref))
    except KeyError as exc:
        raise click.ClickException(f"--ref {ref!r}: {exc.args[0]}") from exc
    except (OSError, RuntimeError) as exc:
        raise click.ClickException(f"--ref {ref!r}: {exc}") from exc


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


def save_result_record(payload: dict, name: str, results_dir: Path | None) -> Path:
    """Registers the result for `mixflow-bench table` (through mixflow_bench.results.records when present)."""
    context = {k: v for k, v in payload.items() if k not in ("metrics", "num_samples", "kind")}
    context["name"] = name
    # the samples' sampler and guidance are not known here: only the evaluator and the sample count are stated
    context.setdefault("protocol", {"sampler": "unknown", "steps": "unknown", "nfe": "unknown", "guidance": "unknown",
                                    "num_samples": payload["num_samples"], "evaluator": "adm"})
    try:
        from mixflow_bench.results.records import make_record, save_record  # type: ignore[import-not-found]
    except ImportError:
        record = {
            "schema": "mixflow-bench/result/v1",
            "kind": "eval",
            **context,
            "metrics": payload["metrics"],
            "num_samples": payload["num_samples"],
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        return _atomic_write_json((results_dir or Path("results")) / f"eval-{name}-{stamp}.json", record)
    record = make_record(
        kind="eval", metrics=payload["metrics"], num_samples=payload["num_samples"], **context
    )
    return save_record(record, results_dir)


def result_table(result, samples: Path, reference: Path) -> Table:
    n = result.num_samples
    title = f"ADM metrics: {samples.name} vs {reference.name} ({n:,} samples)"
    table = Table(title=title, min_width=len(title) + 4)
    table.add_column("metric")
    table.add_column("value", justify="right")
    labels = {
        "fid": "FID",
        "sfid": "sFID",
        "is": "Inception Score",
        "precision": "Precision",
        "recall": "Recall",
        "precision_float32": "Precision (float32)",
        "recall_float32": "Recall (float32)",
        "fd_dinov2": "FD-DINOv2",
    }
    for key, value in result.metrics.items():
        table.add_row(labels.get(key, key), f"{value:.4f}")
    return table


@click.command(name="eval")
@click.option(
    "--samples",
    "samples",
    required=True,
    type=click.Path(path_type=Path),
    help="Sample npz (arr_0: uint8 N×H×W×3).",
)
@click.option("--ref", "ref", required=True, help="Reference npz (ADM reference batch) or artifact name.")
@click.option(
    "--metrics",
    "metrics",
    default="fid,sfid,is,prec,rec",
    show_default=True,
    help="Comma-separated subset of fid,sfid,is,prec,rec.",
)
@click.option(
    "--json", "json_path", type=click.Path(path_type=Path), default=None, help="Write the result here."
)
@click.option(
    "--inception-weights",
    type=click.Path(path_type=Path),
    default=None,
    help="Local Inception weights (.pth state dict or TF-named TorchScript); default: torch-fidelity's. "
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
    "--results-dir", type=click.Path(path_type=Path), default=None, help="Where the result record goes."
)
@click.option(
    "--fd-dinov2",
    "dinov2_weights",
    default=None,
    help="Also compute FD-DINOv2 with DINOv2 ViT-L/14 weights: a local Hugging Face folder, or dinov2-vit-l "
    "(fetched into the artifact cache).",
)
@click.option("--name", default=None, help="Result name (default: the sample file's stem).")
def command(
    samples: Path,
    ref: str,
    metrics: str,
    json_path: Path | None,
    inception_weights: Path | None,
    device: str | None,
    batch_size: int | None,
    fd_method: str,
    tf32: bool,
    results_dir: Path | None,
    name: str | None,
    dinov2_weights: str | None,
) -> None:
    """Evaluate SAMPLES against a reference exactly as OpenAI's ADM evaluator does (float32 features).

    Precision and Recall are given twice. `precision`/`recall` compute distances in float16 first, as ADM's
    evaluator does, and are the numbers papers report; `precision_float32`/`recall_float32` use exact float32
    distances. float16 rounding makes more distances tie with a neighbourhood radius and count as inside, so the
    two differ by 1-2 points at a few hundred samples and far less at 50,000.
    """
    import zipfile

    from mixflow_bench.metrics.evaluate import default_device, evaluate, parse_metrics
    from mixflow_bench.metrics.inception import RANDOM_WEIGHTS
    from mixflow_bench.metrics.npz_stream import NpzFormatError

    try:
        wanted = parse_metrics(metrics)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--metrics") from exc
    if inception_weights is not None and str(inception_weights) == RANDOM_WEIGHTS and not inception_weights.exists():
        raise click.BadParameter(
            "random weights give no metric (they are for speed benchmarks: benchmarks/bench_eval.py); "
            "pass an Inception weights file or leave the option out",
            param_hint="--inception-weights",
        )
    reference = resolve_reference(ref)
    device = device or default_device()
    try:
        result = evaluate(
            samples,
            reference,
            wanted,
            weights=str(inception_weights.resolve()) if inception_weights else None,  # a path, never a keyword
            device=device,
            batch_size=batch_size,
            fd_method=fd_method,
            tf32=tf32,
        )
    except (NpzFormatError, ValueError, OSError, RuntimeError, zipfile.BadZipFile) as exc:
        raise click.ClickException(str(exc)) from exc
    if dinov2_weights is not None:
        from mixflow_bench.metrics.dinov2 import fd_dinov2

        try:
            result.metrics["fd_dinov2"] = fd_dinov2(samples, reference, dinov2_weights, device, batch_size)
        except (FileNotFoundError, ValueError) as exc:
            raise click.ClickException(str(exc)) from exc
    console.print(result_table(result, samples, reference))
    for note in result.notes:
        console.print(f"note: {note}", highlight=False)
    payload = {
        "kind": "eval",
        "metrics": result.metrics,
        "num_samples": result.num_samples,
        "samples": str(samples),
        "reference": str(reference),
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
    rec = save_result_record(payload, name or samples.stem, results_dir)
    console.print(f"result record: {rec}")
