"""On-disk layout of a latent cache, atomic writes, and ``verify``.

A cache directory holds, per shard ``i`` (5-digit index):

* ``shard-iiiii.<field>.npy``: float array ``(n, flips, *field_shape)`` (memory-mappable),
  fields are ``mean``/``std`` (SD-VAE posterior moments) or ``latent`` (normalised RAE features);
* ``shard-iiiii.labels.npy``: int64 ``(n,)``;
* ``shard-iiiii.json``: the shard record (count, keys, skipped images, per-file sha256/size), written last.

``settings.json`` (written before any shard) pins what the cache is; ``manifest.json`` (written after every
shard exists) gathers the shard records plus counts, shapes, class list and preprocessing. All files are
written to a temporary name in the same directory and moved into place with ``os.replace``.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mixflow_bench.atomic import atomic_write

FORMAT = "mixflow-latent-cache"
VERSION = 1
MANIFEST = "manifest.json"
SETTINGS = "settings.json"


def shard_stem(index: int) -> str:
    return f"shard-{index:05d}"


def shard_file(index: int, name: str) -> str:
    """File name of field/labels ``name`` of shard ``index``."""
    return f"{shard_stem(index)}.{name}.npy"


def shard_record_file(index: int) -> str:
    return f"{shard_stem(index)}.json"


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as JSON (sorted keys, deterministic bytes) atomically."""
    data = (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode()
    atomic_write(path, lambda fh: fh.write(data))


def atomic_save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    """``np.save`` atomically (no pickles)."""
    atomic_write(path, lambda fh: np.save(fh, np.ascontiguousarray(array), allow_pickle=False))


def read_json(path: str | os.PathLike) -> Any:
    with open(path) as fh:
        return json.load(fh)


def remove_stale_temporaries(directory: str | os.PathLike, shard_indices: list[int]) -> int:
    """Delete leftovers of interrupted writes of these shards (``.shard-iiiii.*.tmp``); returns how many."""
    n = 0
    for i in shard_indices:
        for p in Path(directory).glob(f".{shard_stem(i)}.*.tmp"):
            p.unlink(missing_ok=True)
            n += 1
    return n


@dataclass
class VerifyReport:
    """Problems found by :func:`verify_cache` (empty ``problems`` = the cache is sound)."""

    directory: str
    num_shards: int = 0
    num_samples: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_cache(directory: str | os.PathLike, check_hashes: bool = True) -> VerifyReport:
    """Check a cache against its manifest: files present, counts, shapes, dtypes, labels and sha256."""
    directory = str(directory)
    report = VerifyReport(directory)
    mpath = os.path.join(directory, MANIFEST)
    if not os.path.isfile(mpath):
        report.problems.append(f"{mpath}: missing (prepare did not finish, or this is not a latent cache)")
        return report
    try:
        manifest = read_json(mpath)
    except (OSError, ValueError) as exc:
        report.problems.append(f"{mpath}: unreadable JSON ({exc})")
        return report
    if manifest.get("format") != FORMAT:
        report.problems.append(f"{mpath}: format is {manifest.get('format')!r}, expected {FORMAT!r}")
        return report
    fields = manifest["fields"]
    flips = manifest["flips"]
    num_classes = len(manifest["classes"])
    total = 0
    for shard in manifest["shards"]:
        n = shard["count"]
        total += n
        for name, info in shard["files"].items():
            path = os.path.join(directory, info["name"])
            if not os.path.isfile(path):
                report.problems.append(f"{info['name']}: missing (shard {shard['index']})")
                continue
            size = os.path.getsize(path)
            if size != info["bytes"]:
                report.problems.append(f"{info['name']}: {size} bytes, manifest says {info['bytes']}")
            try:
                arr = np.load(path, mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError) as exc:
                report.problems.append(f"{info['name']}: not a readable .npy ({exc})")
                continue
            if name == "labels":
                want_shape, want_dtype = (n,), "int64"
            else:
                want_shape, want_dtype = (n, flips, *fields[name]["shape"]), fields[name]["dtype"]
            if tuple(arr.shape) != tuple(want_shape) or str(arr.dtype) != want_dtype:
                report.problems.append(
                    f"{info['name']}: shape {tuple(arr.shape)} {arr.dtype}, "
                    f"expected {tuple(want_shape)} {want_dtype}"
                )
            elif name == "labels" and n and (int(arr.min()) < 0 or int(arr.max()) >= num_classes):
                report.problems.append(f"{info['name']}: labels outside [0, {num_classes})")
            if check_hashes and sha256_file(path) != info["sha256"]:
                report.problems.append(
                    f"{info['name']}: sha256 differs from the manifest (file changed or corrupt)"
                )
    if total != manifest["num_samples"]:
        report.problems.append(
            f"shard counts sum to {total}, manifest num_samples is {manifest['num_samples']}"
        )
    report.num_shards = len(manifest["shards"])
    report.num_samples = total
    return report
