"""Sharded, resumable sampling to an ADM-style ``.npz``.

Samples ``0..num-1`` are cut into shards of ``shard_size``; rank ``r`` of ``world_size`` makes the shards ``k``
with ``k % world_size == r``. Each shard is written atomically to ``<out>.shards/shard-XXXXX.npz`` (uint8 NHWC
``images``, ``labels``, ``indices``), so a run killed at any point keeps its finished shards and redoes only the
unfinished ones. Rank 0 then merges the shards in order into ``out`` (``arr_0`` images, ``arr_1`` labels) with
fixed zip metadata: the result is byte-identical whatever the batch size, the number of processes or the number of
interruptions.
"""

from __future__ import annotations

import json
import math
import os
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mixflow_bench.atomic import atomic_write_text
from mixflow_bench.errors import UserError
from mixflow_bench.progress import image_progress
from mixflow_bench.sampling.npz import write_npz, write_npz_stream
from mixflow_bench.sampling.quantize import quantize_tensor
from mixflow_bench.sampling.seeding import initial_noise, sample_labels, step_noise

# generate(noise (B, *latent_shape), labels (B,), step_noise(step) -> (B, *latent_shape)) -> images (B,3,H,W) in [0,1]
GenerateFn = Callable[[Tensor, Tensor, Callable[[int], Tensor]], Tensor]


@dataclass
class Generator:
    """What ``sample_to_npz`` needs from a model: its noise shape, its classes and a generate function."""

    generate: GenerateFn
    latent_shape: tuple[int, ...]
    num_classes: int
    quantize: str = "round"
    fingerprint: str = ""  # identifies the model + sampling settings; guards a shard directory against mixing
    fingerprint_settings: dict[str, Any] = field(default_factory=dict)  # what the fingerprint hashes, readable


class _HostCopy:
    """A batch of uint8 images on its way to the host: on CUDA an asynchronous copy into pinned memory."""

    def __init__(self, images: Tensor):
        self.event = None
        if images.is_cuda:
            host = torch.empty(images.shape, dtype=images.dtype, pin_memory=True)
            host.copy_(images, non_blocking=True)
            self.event = torch.cuda.Event()
            self.event.record()
            images = host
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def wait(self) -> np.ndarray:
        if self.event is not None:
            self.event.synchronize()
        return self.images.numpy()


class ShardSettingsError(UserError, ValueError):
    """The shard directory holds samples made with other settings."""


def shard_dir_for(out: Path) -> Path:
    out = Path(out)
    return out.with_name(out.name + ".shards")


def _shard_path(shard_dir: Path, k: int) -> Path:
    return shard_dir / f"shard-{k:05d}.npz"


def _shard_ok(path: Path, indices: np.ndarray) -> bool:
    if not path.exists():
        return False
    try:
        with np.load(path) as data:
            return np.array_equal(data["indices"], indices) and len(data["images"]) == len(indices)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError):
        return False


DETAIL = "fingerprint_settings"  # settings.json: the readable settings behind the fingerprint


def _flatten(settings: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"sample": {"steps": 8}}`` -> ``{"sample.steps": 8}``."""
    flat: dict[str, Any] = {}
    for key, value in settings.items():
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def settings_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """``["sample.steps 8 -> 16", ...]``: the settings that differ, by name (the readable fingerprint settings
    instead of the fingerprint hash where both sides have them)."""
    if old.get(DETAIL) and new.get(DETAIL):
        old = {**old, "fingerprint": None, DETAIL: old[DETAIL]}
        new = {**new, "fingerprint": None, DETAIL: new[DETAIL]}
    else:
        old, new = {k: v for k, v in old.items() if k != DETAIL}, {k: v for k, v in new.items() if k != DETAIL}
    a, b = _flatten(old), _flatten(new)
    changed = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    return [f"{k.removeprefix(DETAIL + '.')} {a.get(k, '(none)')} -> {b.get(k, '(none)')}" for k in changed]


def _check_settings(shard_dir: Path, settings: dict[str, Any], rank: int) -> None:
    meta = shard_dir / "settings.json"
    if meta.exists():
        changes = settings_changes(json.loads(meta.read_text()), settings)
        if changes:
            raise ShardSettingsError(
                f"{shard_dir} holds samples made with other settings: {'; '.join(changes)} (before -> now); "
                "write to another --out, or remove that directory to sample again"
            )
        return
    if rank == 0:
        atomic_write_text(meta, json.dumps(settings, indent=2, sort_keys=True))


def sample_to_npz(
    generator: Generator,
    num: int,
    out: Path | str,
    *,
    seed: int = 0,
    labels: str = "uniform",
    batch_size: int = 64,
    shard_size: int = 1000,
    rank: int | None = None,
    world_size: int | None = None,
    progress: bool = True,
    merge: bool = True,
    merge_timeout_s: float = 24 * 3600,
    keep_shards: bool = True,
) -> Path | None:
    """Generate ``num`` samples into the ADM npz ``out``; returns ``out`` on rank 0 once merged, else None.

    Sample i's start noise, label and SDE noise depend only on ``(seed, i)``. ``rank``/``world_size`` default to
    the ``RANK``/``WORLD_SIZE`` environment (torchrun, Slurm). Re-running after an interruption resumes.
    """
    if num <= 0:
        raise ValueError(f"num must be positive, got {num}")
    if batch_size <= 0 or shard_size <= 0:
        raise ValueError(f"batch_size and shard_size must be positive, got {batch_size} and {shard_size}")
    rank = int(os.environ.get("RANK", 0)) if rank is None else rank
    world_size = int(os.environ.get("WORLD_SIZE", 1)) if world_size is None else world_size
    out = Path(out)
    shard_dir = shard_dir_for(out)
    shard_dir.mkdir(parents=True, exist_ok=True)
    settings = {
        "num": num,
        "seed": seed,
        "labels": labels,
        "shard_size": shard_size,
        "latent_shape": list(generator.latent_shape),
        "num_classes": generator.num_classes,
        "quantize": generator.quantize,
        "fingerprint": generator.fingerprint,
        DETAIL: generator.fingerprint_settings,
    }
    _check_settings(shard_dir, settings, rank)

    all_labels = sample_labels(seed, num, generator.num_classes, labels)
    num_shards = math.ceil(num / shard_size)
    mine = [k for k in range(num_shards) if k % world_size == rank]
    todo = []
    done_images = 0
    for k in mine:
        idx = np.arange(k * shard_size, min((k + 1) * shard_size, num))
        if _shard_ok(_shard_path(shard_dir, k), idx):
            done_images += len(idx)
        else:
            todo.append((k, idx))
    my_total = done_images + sum(len(i) for _, i in todo)

    with image_progress(disable=not progress) as bar:
        task = bar.add_task(f"sampling (rank {rank}/{world_size})", total=my_total, completed=done_images)
        for k, idx in todo:
            chunks: list[np.ndarray] = []
            pending: _HostCopy | None = None
            for start in range(0, len(idx), batch_size):
                batch_idx = idx[start : start + batch_size].tolist()
                noise = initial_noise(seed, batch_idx, tuple(generator.latent_shape))
                y = torch.from_numpy(all_labels[batch_idx])
                images = generator.generate(
                    noise, y, lambda step, b=batch_idx: step_noise(seed, b, tuple(generator.latent_shape), step)
                )
                copy = _HostCopy(quantize_tensor(images, generator.quantize))
                if pending is not None:  # the previous batch's copy ran while this batch was being queued
                    chunks.append(pending.wait())
                    bar.advance(task, len(pending))
                pending = copy
            if pending is not None:
                chunks.append(pending.wait())
                bar.advance(task, len(pending))
            write_npz(
                _shard_path(shard_dir, k),
                {"images": np.concatenate(chunks), "labels": all_labels[idx], "indices": idx.astype(np.int64)},
            )

    if rank != 0 or not merge:
        return None
    wait_for_shards(shard_dir, num, shard_size, merge_timeout_s)
    merge_shards(shard_dir, out, num, shard_size)
    if not keep_shards:
        for k in range(num_shards):
            _shard_path(shard_dir, k).unlink(missing_ok=True)
    return out


def wait_for_shards(shard_dir: Path, num: int, shard_size: int, timeout_s: float) -> None:
    """Block until every shard of the run exists (other ranks may still be writing theirs)."""
    num_shards = math.ceil(num / shard_size)
    deadline = time.monotonic() + timeout_s
    while True:
        missing = [k for k in range(num_shards) if not _shard_path(shard_dir, k).exists()]
        if not missing:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"shards {missing[:5]}... of {shard_dir} did not appear within {timeout_s:.0f} s")
        time.sleep(0.5)


def merge_shards(shard_dir: Path, out: Path, num: int, shard_size: int) -> Path:
    """Stream the shards in order into the ADM npz ``out`` (``arr_0`` uint8 NHWC, ``arr_1`` labels)."""
    num_shards = math.ceil(num / shard_size)
    paths = [_shard_path(shard_dir, k) for k in range(num_shards)]
    for k, p in enumerate(paths):
        idx = np.arange(k * shard_size, min((k + 1) * shard_size, num))
        if not _shard_ok(p, idx):
            raise ValueError(f"shard {p} is missing or does not hold samples {idx[0]}..{idx[-1]}")
    with np.load(paths[0]) as first:
        image_shape = first["images"].shape[1:]

    def read(key: str):
        for p in paths:
            with np.load(p) as data:
                yield data[key]

    return write_npz_stream(
        out,
        [
            ("arr_0", np.dtype(np.uint8), (num, *image_shape), read("images")),
            ("arr_1", np.dtype(np.int64), (num,), read("labels")),
        ],
    )
