"""Encode an image source into a sharded latent cache, resumably and split across processes.

Shard ``i`` holds source records ``[i * shard_size, (i + 1) * shard_size)`` (minus skipped corrupt images), so
the content of every shard is fixed by the settings alone: a shard can be redone by any process and comes out
byte-identical. A shard counts as done once its record ``shard-iiiii.json`` exists (written after its data
files); an interrupted shard is simply redone. Process ``rank`` of ``world_size`` takes shards with
``index % world_size == rank`` (torchrun ``RANK``/``WORLD_SIZE`` or a Slurm array's task id/count).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import UnidentifiedImageError
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn

from mixflow_bench.data import cache
from mixflow_bench.data.codec import Codec
from mixflow_bench.data.preprocess import ADM_CROP, preprocess_to_array, to_unit_tensor_batch
from mixflow_bench.data.sources import ImageRecord, ImageSource
from mixflow_bench.progress import RateColumn, progress_display

DECODE_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError)
DTYPES = ("float32", "float16")


class CorruptImageError(RuntimeError):
    """An image of the source could not be decoded (raised with ``on_corrupt='error'``)."""


@dataclass(frozen=True)
class PrepareSettings:
    """Everything that determines a cache's content."""

    encoder: str
    resolution: int
    shard_size: int = 10_000
    flips: int = 2  # 2: original + horizontal mirror (SiT/RAE RandomHorizontalFlip); 1: original only (REPA)
    dtype: str = "float32"
    # {"random_init": bool, "sha256": fingerprint of the encoding weights} (data.compatibility); None: unknown
    encoder_weights: dict[str, Any] | None = field(default=None, compare=False, hash=False)

    def validate(self) -> None:
        if self.shard_size <= 0:
            raise ValueError(f"shard_size must be positive, got {self.shard_size}")
        if self.flips not in (1, 2):
            raise ValueError(f"flips must be 1 or 2, got {self.flips}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {self.dtype!r}")
        if self.resolution <= 0:
            raise ValueError(f"resolution must be positive, got {self.resolution}")


def rank_from_env(env: dict[str, str] | None = None) -> tuple[int, int]:
    """(rank, world_size) from torchrun (``RANK``/``WORLD_SIZE``) or a Slurm array; (0, 1) otherwise."""
    env = dict(os.environ if env is None else env)
    if "SLURM_ARRAY_TASK_ID" in env and "SLURM_ARRAY_TASK_COUNT" in env:
        task = int(env["SLURM_ARRAY_TASK_ID"]) - int(env.get("SLURM_ARRAY_TASK_MIN", "0"))
        return task, int(env["SLURM_ARRAY_TASK_COUNT"])
    if "RANK" in env and "WORLD_SIZE" in env:
        return int(env["RANK"]), int(env["WORLD_SIZE"])
    return 0, 1


def shards_for_rank(num_shards: int, rank: int, world_size: int) -> list[int]:
    """Shard indices process ``rank`` of ``world_size`` writes (round-robin by index)."""
    if world_size <= 0 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
    return list(range(rank, num_shards, world_size))


def num_shards(num_records: int, shard_size: int) -> int:
    return (num_records + shard_size - 1) // shard_size


def _settings_doc(settings: PrepareSettings, source: ImageSource) -> dict[str, Any]:
    return {
        "format": cache.FORMAT,
        "version": cache.VERSION,
        "encoder": settings.encoder,
        "resolution": settings.resolution,
        "shard_size": settings.shard_size,
        "flips": settings.flips,
        "dtype": settings.dtype,
        "encoder_weights": settings.encoder_weights,
        "source": {"path": os.path.abspath(source.path), "kind": source.kind, "num_records": len(source)},
        "classes": list(source.classes),
        "preprocessing": {
            "rgb": "PIL Image.convert('RGB')",
            "crop": ADM_CROP,
            "crop_size": settings.resolution,
            "encoder_input": "float RGB in [0, 1], NCHW",
            "flips": "original, horizontal mirror" if settings.flips == 2 else "original only",
        },
    }


def init_cache_dir(out_dir: str, settings: PrepareSettings, source: ImageSource) -> dict[str, Any]:
    """Create ``out_dir`` and its ``settings.json``, or check an existing one matches (resume)."""
    settings.validate()
    os.makedirs(out_dir, exist_ok=True)
    doc = _settings_doc(settings, source)
    path = os.path.join(out_dir, cache.SETTINGS)
    if os.path.exists(path):
        old = cache.read_json(path)
        diffs = [k for k in sorted(set(doc) | set(old)) if old.get(k) != doc.get(k) and k != "source"]
        old_src, new_src = old.get("source", {}), doc["source"]
        if old_src.get("num_records") != new_src["num_records"]:
            diffs.append("source.num_records")
        if diffs:
            detail = "; ".join(
                f"{k}: cache has {old.get(k)!r}, now {doc.get(k)!r}" for k in diffs if k in doc
            )
            raise ValueError(
                f"{out_dir} was prepared with different settings ({', '.join(diffs)}). {detail}. "
                "Use another --out directory or the original settings."
            )
        return old
    cache.atomic_write_json(path, doc)
    return doc


def _shard_done(out_dir: str, index: int) -> bool:
    rec = os.path.join(out_dir, cache.shard_record_file(index))
    if not os.path.isfile(rec):
        return False
    try:
        record = cache.read_json(rec)
    except (OSError, ValueError):
        return False
    return all(
        os.path.isfile(os.path.join(out_dir, f["name"]))
        and os.path.getsize(os.path.join(out_dir, f["name"])) == f["bytes"]
        for f in record["files"].values()
    )


def _load_one(record: ImageRecord, size: int) -> np.ndarray | Exception:
    try:
        return preprocess_to_array(record.read(), size)
    except DECODE_ERRORS as exc:
        return exc


def encode_batch(
    codec: Codec, arrays: list[np.ndarray], flips: int, device: Any = None
) -> dict[str, np.ndarray]:
    """Encode uint8 crops -> {field: float32 array (B, flips, *shape)} (orientation 1 = mirrored)."""
    per_flip = []
    for f in range(flips):
        x = to_unit_tensor_batch(arrays, flip=bool(f))
        if device is not None:
            x = x.to(device)
        with torch.inference_mode():
            out = codec.encode(x)
        per_flip.append({k: v.detach().to("cpu", torch.float32).numpy() for k, v in out.items()})
    return {k: np.stack([p[k] for p in per_flip], axis=1) for k in per_flip[0]}


def write_shard(
    out_dir: str,
    index: int,
    source: ImageSource,
    codec: Codec,
    settings: PrepareSettings,
    *,
    batch_size: int = 64,
    on_corrupt: str = "skip",
    pool: ThreadPoolExecutor | None = None,
    device: Any = None,
    advance=None,
    warn=None,
) -> dict[str, Any]:
    """Encode and write shard ``index``; returns its record (also written as ``shard-iiiii.json``)."""
    lo = index * settings.shard_size
    records = source.records[lo : lo + settings.shard_size]
    np_dtype = np.dtype(settings.dtype)
    chunks: dict[str, list[np.ndarray]] = {}
    labels: list[int] = []
    keys: list[str] = []
    skipped: list[dict[str, str]] = []
    for b in range(0, len(records), batch_size):
        batch = records[b : b + batch_size]
        loaded = (
            list(pool.map(lambda r: _load_one(r, settings.resolution), batch))
            if pool
            else [_load_one(r, settings.resolution) for r in batch]
        )
        arrays = []
        for rec, arr in zip(batch, loaded):
            if isinstance(arr, Exception):
                msg = f"{type(arr).__name__}: {arr}"
                if on_corrupt == "error":
                    raise CorruptImageError(f"cannot decode image {rec.origin}: {msg}")
                skipped.append({"key": rec.key, "origin": rec.origin, "error": msg})
                if warn:
                    warn(f"skipping corrupt image {rec.origin} ({msg})")
                continue
            arrays.append(arr)
            labels.append(rec.label)
            keys.append(rec.key)
        if arrays:
            for k, v in encode_batch(codec, arrays, settings.flips, device).items():
                chunks.setdefault(k, []).append(v.astype(np_dtype))
        if advance:
            advance(len(batch))
    if not chunks:  # every image of the shard was corrupt: empty arrays of the right shape
        probe = encode_batch(codec, [np.zeros((settings.resolution,) * 2 + (3,), np.uint8)], 1, device)
        chunks = {k: [np.zeros((0, settings.flips, *v.shape[2:]), np_dtype)] for k, v in probe.items()}
    files: dict[str, dict[str, Any]] = {}
    arrays_out = {k: np.concatenate(v) for k, v in chunks.items()}
    arrays_out["labels"] = np.asarray(labels, dtype=np.int64)
    for name in sorted(arrays_out):
        fname = cache.shard_file(index, name)
        path = os.path.join(out_dir, fname)
        cache.atomic_save_npy(path, arrays_out[name])
        files[name] = {"name": fname, "sha256": cache.sha256_file(path), "bytes": os.path.getsize(path)}
    record = {
        "index": index,
        "first_record": lo,
        "count": len(labels),
        "files": files,
        "skipped": skipped,
        "keys": keys,
        "field_shapes": {k: list(v.shape[2:]) for k, v in arrays_out.items() if k != "labels"},
        "latent_shape": [int(d) for d in codec.latent_shape],
    }
    cache.atomic_write_json(os.path.join(out_dir, cache.shard_record_file(index)), record)
    return record


def make_progress(console=None, disable: bool = False) -> Any:
    """Images encoded: a bar in a terminal, lines in a log (:mod:`mixflow_bench.progress`)."""
    return progress_display(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=disable,
    )


def prepare_shards(
    source: ImageSource,
    codec: Codec,
    out_dir: str,
    settings: PrepareSettings,
    *,
    rank: int = 0,
    world_size: int = 1,
    batch_size: int = 64,
    on_corrupt: str = "skip",
    workers: int = 4,
    device: Any = None,
    show_progress: bool = True,
    console=None,
    shard_indices: Sequence[int] | None = None,
) -> list[int]:
    """Write this rank's missing shards; returns the indices written now (done shards are kept)."""
    if on_corrupt not in ("skip", "error"):
        raise ValueError(f"on_corrupt must be 'skip' or 'error', got {on_corrupt!r}")
    init_cache_dir(out_dir, settings, source)
    total = num_shards(len(source), settings.shard_size)
    mine = list(shard_indices) if shard_indices is not None else shards_for_rank(total, rank, world_size)
    cache.remove_stale_temporaries(out_dir, mine)  # only this rank's shards: others may be writing theirs
    todo = [i for i in mine if not _shard_done(out_dir, i)]
    todo_images = sum(
        len(source.records[i * settings.shard_size : (i + 1) * settings.shard_size]) for i in todo
    )
    written: list[int] = []
    with (
        make_progress(console, disable=not show_progress) as progress,
        ThreadPoolExecutor(max(1, workers)) as pool,
    ):
        task = progress.add_task(
            f"encode {settings.encoder}@{settings.resolution} rank {rank}/{world_size}", total=todo_images
        )

        def warn(msg: str) -> None:
            progress.console.print(f"[yellow]warning:[/] {msg}")

        for i in todo:
            write_shard(
                out_dir,
                i,
                source,
                codec,
                settings,
                batch_size=batch_size,
                on_corrupt=on_corrupt,
                pool=pool,
                device=device,
                advance=lambda n: progress.advance(task, n),
                warn=warn,
            )
            written.append(i)
    return written


def finalize_manifest(out_dir: str) -> dict[str, Any] | None:
    """Write ``manifest.json`` if every shard is done; returns it (None while shards are missing)."""
    settings = cache.read_json(os.path.join(out_dir, cache.SETTINGS))
    total = num_shards(settings["source"]["num_records"], settings["shard_size"])
    if not all(_shard_done(out_dir, i) for i in range(total)):
        return None
    shards, skipped, field_shapes = [], [], None
    for i in range(total):
        rec = cache.read_json(os.path.join(out_dir, cache.shard_record_file(i)))
        skipped.extend(rec["skipped"])
        if rec["count"] and field_shapes is None:
            field_shapes = rec["field_shapes"]
        shards.append({k: rec[k] for k in ("index", "first_record", "count", "files")})
    rec0 = cache.read_json(os.path.join(out_dir, cache.shard_record_file(0)))
    field_shapes = field_shapes or rec0["field_shapes"]
    manifest = dict(settings)
    manifest.update(
        {
            "num_samples": sum(s["count"] for s in shards),
            "num_shards": total,
            "latent_shape": rec0["latent_shape"],
            "fields": {k: {"shape": v, "dtype": settings["dtype"]} for k, v in sorted(field_shapes.items())},
            "shards": shards,
            "skipped": skipped,
        }
    )
    cache.atomic_write_json(os.path.join(out_dir, cache.MANIFEST), manifest)
    return manifest
