"""`mixflow-bench data`: build (``prepare``) and check (``verify``) latent caches for training."""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.table import Table

from mixflow_bench.cli.common import console, err_console, json_option, write_json_output

if TYPE_CHECKING:
    from mixflow_bench.data.cache import VerifyReport


def _load_codec(spec: str, resolution: int, random_init: bool, device: str, seed: int):
    """A zoo encoder name, or ``package.module:factory`` called with (resolution, random_init, device)."""
    import torch

    torch.manual_seed(seed)  # random-init encoders are reproducible
    if ":" in spec:
        module, _, attr = spec.partition(":")
        factory = getattr(importlib.import_module(module), attr)
        return factory(resolution=resolution, random_init=random_init, device=device)
    from mixflow_bench.data.codec import build_named_codec

    return build_named_codec(spec, resolution, random_init=random_init, device=device)


def _settings_from_recipe(recipe, encoder, resolution, flips, out_dir):
    """(encoder, resolution, flips, out) from the options, filled from ``--recipe``'s data: section."""
    if recipe is not None:
        from mixflow_bench.recipes.loader import load_recipe

        try:
            data = load_recipe(recipe).data
        except (ValueError, FileNotFoundError) as exc:
            raise click.ClickException(str(exc)) from exc
        if data is None or data.source != "latent-cache":
            raise click.ClickException(f"recipe {recipe} does not train on a latent cache (data.source)")
        for option, mine, theirs in (("--encoder", encoder, data.encoder), ("--resolution", resolution,
                                     data.resolution)):  # fmt: skip
            if mine is not None and theirs is not None and str(mine) != str(theirs):
                raise click.ClickException(f"{option} {mine} contradicts recipe {recipe} ({theirs})")
        encoder, resolution, out_dir = encoder or data.encoder, resolution or data.resolution, out_dir or data.path
        flips = flips or ("both" if data.hflip else "none")
    missing = [o for o, v in (("--encoder", encoder), ("--resolution", resolution), ("--out", out_dir)) if not v]
    if missing:
        raise click.ClickException(f"missing {', '.join(missing)} (give them, or --recipe)")
    return encoder, int(resolution), flips or "both", out_dir


@click.group(name="data")
def command() -> None:
    """Prepare and verify sharded latent caches of ImageNet-style image folders."""


def _prepare_reference(source, recipe, resolution, out, no_progress, limit=None) -> None:
    """``--reference``: a data set's training images -> the ADM-style reference npz an evaluation recipe names
    (the first ``limit`` of them when given; else the recipe's ``reference_data.limit``, else all)."""
    import dataclasses
    from types import SimpleNamespace

    from mixflow_bench.data.reference_images import RESIZE_RULE, build_reference
    from mixflow_bench.progress import progress_bar
    from mixflow_bench.recipes.schema import ReferenceDataSection

    if recipe is not None:
        from mixflow_bench.recipes.loader import load_recipe

        try:
            evaluation = load_recipe(recipe).eval
        except (ValueError, FileNotFoundError) as exc:
            raise click.ClickException(str(exc)) from exc
        if evaluation is None or evaluation.reference_data is None:
            raise click.ClickException(f"recipe {recipe} names no reference data set (eval.reference_data)")
        spec = evaluation.reference_data
        if resolution is not None and resolution != spec.resolution:
            raise click.ClickException(f"--resolution {resolution} contradicts recipe {recipe} ({spec.resolution})")
    else:
        if source is None or out is None:
            raise click.ClickException("--reference needs --recipe, or --source and --out")
        is_cifar = os.path.isfile(source) and source.endswith((".tar.gz", ".tgz", ".tar"))
        if not is_cifar and resolution is None:
            raise click.ClickException("--reference from an image folder needs --resolution (or --recipe)")
        spec = ReferenceDataSection("cifar10" if is_cifar else "image-folder", 32 if is_cifar else resolution,
                                    archive=source if is_cifar else None)  # fmt: skip
        evaluation = SimpleNamespace(reference=out, reference_data=spec)
        recipe = "(none)"
    if limit is not None:
        spec = dataclasses.replace(spec, limit=limit)
        evaluation = SimpleNamespace(reference=evaluation.reference, reference_data=spec)
    try:
        with progress_bar("reference images", not no_progress) as bar:
            path, n = build_reference(evaluation, recipe, source, out, progress=bar)
    except (ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    rule = "" if spec.dataset == "cifar10" else f"; resize: {RESIZE_RULE.replace('R', str(spec.resolution))}"
    first = f"the first {n:,}" if spec.limit else f"{n:,}"
    console.print(f"reference [bold]{path}[/]: {first} {spec.split} images of {spec.dataset}{rule}")


@command.command(name="prepare")
@click.option(
    "--source",
    default=None,
    type=click.Path(exists=True),
    help="Class-folder tree, .tar, or folder of .tar shards (--reference: the CIFAR-10 archive or an image "
    "folder, flat or in class folders).",
)
@click.option(
    "--reference",
    "reference",
    is_flag=True,
    help="Build the ADM-style reference npz (arr_0 uint8 NxHxWx3) of a data set's training images instead of a "
    "latent cache: CIFAR-10 from its official archive (fetched through the hub with --recipe), FFHQ / AFHQv2 "
    "from an image folder (resized to --resolution only when not already that size).",
)
@click.option(
    "--recipe",
    default=None,
    help="Take --encoder, --resolution, --flips and --out from this training recipe's data: section.",
)
@click.option(
    "--limit",
    default=None,
    type=click.IntRange(min=1),
    help="--reference: the first N images of the listing (default: the recipe's eval.reference_data.limit, "
    "10000 for FFHQ / AFHQv2 as the official FID-10K; else every image).",
)
@click.option("--encoder", default=None, help="sd-vae-ft-ema | sd-vae-ft-mse | rae-dinov2-b (or module:factory).")
@click.option("--resolution", default=None, type=click.IntRange(min=1), help="Crop size: 256 or 512.")
@click.option("--out", "out_dir", default=None, type=click.Path(), help="Cache directory (--reference: the .npz).")
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(min=1))
@click.option(
    "--shard-size", default=10_000, show_default=True, type=click.IntRange(min=1), help="Images per shard."
)
@click.option("--on-corrupt", type=click.Choice(["skip", "error"]), default="skip", show_default=True)
@click.option(
    "--random-init-encoder", is_flag=True, help="Randomly initialised encoder weights (testing, benchmarks)."
)
@click.option(
    "--flips",
    type=click.Choice(["both", "none"]),
    default=None,
    help="both: store original + mirrored latents (SiT/RAE random flip); none: original only (REPA). "
    "Default: the recipe's data.hflip, else both.",
)
@click.option("--dtype", type=click.Choice(["float32", "float16"]), default="float32", show_default=True)
@click.option("--device", default=None, help="Encoder device (default: cuda when available, else cpu).")
@click.option(
    "--workers", default=4, show_default=True, type=click.IntRange(min=1), help="Image decoding threads."
)
@click.option(
    "--rank", type=int, default=None, help="This process's rank (default: RANK or SLURM_ARRAY_TASK_ID)."
)
@click.option(
    "--world-size", type=int, default=None, help="Number of processes (default: WORLD_SIZE or array count)."
)
@click.option("--seed", default=0, show_default=True, help="Seed for --random-init-encoder weights.")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
def prepare(
    source,
    reference,
    recipe,
    limit,
    encoder,
    resolution,
    out_dir,
    batch_size,
    shard_size,
    on_corrupt,
    random_init_encoder,
    flips,
    dtype,
    device,
    workers,
    rank,
    world_size,
    seed,
    no_progress,
) -> None:
    """Encode SOURCE into a sharded latent cache at --out (resumable; rerun to continue), or with --reference
    write a training-set reference npz (to the recipe's eval.reference, or --out)."""
    if reference:
        _prepare_reference(source, recipe, resolution, out_dir, no_progress, limit)
        return
    if source is None:
        raise click.UsageError("missing --source")
    import torch

    from mixflow_bench.data.prepare import (
        CorruptImageError,
        PrepareSettings,
        finalize_manifest,
        num_shards,
        prepare_shards,
        rank_from_env,
    )
    from mixflow_bench.data.sources import open_source

    encoder, resolution, flips, out_dir = _settings_from_recipe(recipe, encoder, resolution, flips, out_dir)
    env_rank, env_world = rank_from_env()
    rank = env_rank if rank is None else rank
    world_size = env_world if world_size is None else world_size
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        src = open_source(source)
    except (ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    try:
        codec = _load_codec(encoder, resolution, random_init_encoder, device, seed)
    except (RuntimeError, ValueError, ImportError, AttributeError, OSError) as exc:
        raise click.ClickException(f"cannot build encoder {encoder!r}: {exc}") from exc
    from mixflow_bench.data.compatibility import encoder_weights_record

    weights = encoder_weights_record(codec, random_init_encoder)
    settings = PrepareSettings(encoder, resolution, shard_size, 2 if flips == "both" else 1, dtype, weights)
    console.print(
        f"source [bold]{source}[/] ({src.kind}): {len(src):,} images, {len(src.classes)} classes -> "
        f"{num_shards(len(src), shard_size)} shards of {shard_size}; rank {rank}/{world_size}"
    )
    try:
        written = prepare_shards(
            src,
            codec,
            out_dir,
            settings,
            rank=rank,
            world_size=world_size,
            batch_size=batch_size,
            on_corrupt=on_corrupt,
            workers=workers,
            device=device,
            show_progress=not no_progress,
            console=err_console,
        )
    except (CorruptImageError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    manifest = finalize_manifest(out_dir)
    if manifest is None:
        console.print(
            f"wrote {len(written)} shard(s); other ranks' shards are still missing, manifest not written yet"
        )
        return
    table = Table(title=f"latent cache {out_dir}")
    table.add_column("item")
    table.add_column("value")
    table.add_row("encoder", manifest["encoder"])
    table.add_row("resolution", str(manifest["resolution"]))
    table.add_row("samples", f"{manifest['num_samples']:,}")
    table.add_row("shards", str(manifest["num_shards"]))
    table.add_row(
        "fields", ", ".join(f"{k} {tuple(v['shape'])} {v['dtype']}" for k, v in manifest["fields"].items())
    )
    table.add_row("orientations", str(manifest["flips"]))
    table.add_row("skipped (corrupt)", str(len(manifest["skipped"])))
    console.print(table)
    for s in manifest["skipped"]:
        err_console.print(f"[yellow]skipped[/] {s['origin']}: {s['error']}")


@command.command(name="verify")
@click.argument("directory", type=click.Path(exists=True, file_okay=False))
@click.option("--no-hashes", is_flag=True, help="Skip sha256 checks (shapes and sizes only).")
@json_option("Write the report as JSON to PATH; '-' or no PATH (after DIRECTORY): print it instead.")
def verify(directory: str, no_hashes: bool, json_path: Path | None) -> None:
    """Check a latent cache against its manifest; exits non-zero on any problem."""
    from mixflow_bench.data.cache import verify_cache

    report = verify_cache(directory, check_hashes=not no_hashes)
    data = {"directory": os.path.abspath(directory), "ok": report.ok, "num_shards": report.num_shards,
            "num_samples": report.num_samples, "problems": report.problems}  # fmt: skip
    if not write_json_output(json_path, data):  # when printed, the JSON is the report
        _print_cache_report(directory, report)
    if not report.ok:
        sys.exit(1)


def _print_cache_report(directory: str, report: VerifyReport) -> None:
    """OK with the cache's size, or a table of its problems."""
    if report.ok:
        console.print(f"[green]OK[/] {directory}: {report.num_shards} shards, {report.num_samples:,} samples")
    else:
        table = Table(title=f"[red]{len(report.problems)} problem(s) in {directory}")
        table.add_column("problem")
        for p in report.problems:
            table.add_row(p)
        err_console.print(table)

