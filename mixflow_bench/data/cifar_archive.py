"""The official CIFAR-10 python archive (``cifar-10-python.tar.gz``) -> its training images, in archive order.

The archive holds ``cifar-10-batches-py/data_batch_1`` … ``data_batch_5`` (the 50,000 training images) and
``test_batch``, each a pickled dict with ``data`` (N×3072 uint8: the red, green and blue 32×32 planes of an
image, rows first) and ``labels`` (N ints). Keys are bytes when unpickled with ``encoding="bytes"``; the str
keys of ``encoding="latin1"`` (what torchvision and the official κ-FC ``dataset_tool.py`` use) are accepted too.
Images come out NHWC (N×32×32×3 uint8), batch 1 first, in each batch's stored order.
"""

from __future__ import annotations

import os
import pickle
import tarfile
from pathlib import Path

import numpy as np

from mixflow_bench.errors import UserError

TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
FOLDER = "cifar-10-batches-py"
SIDE = 32
NUM_TRAIN = 50_000


class CifarArchiveError(UserError, ValueError):
    """The file is not the CIFAR-10 python archive (or is damaged)."""


def _field(batch: dict, name: str, where: str):
    for key in (name.encode(), name):
        if key in batch:
            return batch[key]
    raise CifarArchiveError(f"{where}: no {name!r} entry (keys: {sorted(map(str, batch))[:6]})")


def _decode_batch(raw: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        batch = pickle.loads(raw, encoding="bytes")  # noqa: S301 - the checked official archive
    except Exception as exc:  # any unpickling failure means a damaged or foreign member
        raise CifarArchiveError(f"{where}: not a CIFAR pickle batch ({type(exc).__name__}: {exc})") from exc
    if not isinstance(batch, dict):
        raise CifarArchiveError(f"{where}: holds a {type(batch).__name__}, not a CIFAR batch dict")
    data = np.asarray(_field(batch, "data", where))
    labels = np.asarray(_field(batch, "labels", where), dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * SIDE * SIDE:
        raise CifarArchiveError(f"{where}: data is {data.dtype} {data.shape}, expected uint8 N×{3 * SIDE * SIDE}")
    if labels.shape != (data.shape[0],):
        raise CifarArchiveError(f"{where}: {labels.shape[0]} labels for {data.shape[0]} images")
    images = data.reshape(-1, 3, SIDE, SIDE).transpose(0, 2, 3, 1)  # CHW planes -> HWC
    return np.ascontiguousarray(images), labels


def read_cifar10_train(archive: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """(images N×32×32×3 uint8, labels N int64) of the five training batches of ``archive``."""
    archive = Path(archive)
    if not archive.is_file():
        raise CifarArchiveError(f"{archive}: no such file (the CIFAR-10 archive cifar-10-python.tar.gz)")
    images, labels = [], []
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = {m.name.lstrip("./"): m for m in tar.getmembers() if m.isfile()}
            for name in TRAIN_BATCHES:
                member = members.get(f"{FOLDER}/{name}")
                if member is None:
                    raise CifarArchiveError(
                        f"{archive}: no {FOLDER}/{name} member; is it the CIFAR-10 python archive "
                        f"(cifar-10-python.tar.gz)?"
                    )
                with tar.extractfile(member) as fh:
                    x, y = _decode_batch(fh.read(), f"{archive}:{member.name}")
                images.append(x)
                labels.append(y)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise CifarArchiveError(f"{archive}: not a readable tar archive ({exc})") from exc
    return np.concatenate(images), np.concatenate(labels)
