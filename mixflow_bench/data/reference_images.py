"""A data set's training images -> an ADM-style reference npz (``arr_0``: uint8 N×H×W×3), the FID reference of
the κ-FC mixed-source recipes (the paper compares samples with the training set).

Sources: the official CIFAR-10 python archive (:mod:`mixflow_bench.data.cifar_archive`, 32×32 as stored), or an
image folder (class folders, as :func:`mixflow_bench.data.sources.open_folder` orders them, or a flat folder in
sorted file-name order) of PNG/JPEG files, for FFHQ / AFHQv2 64×64.

Resize rule (folders): an image already ``resolution``×``resolution`` is kept as it is; any other is converted to
RGB and resized as a whole (no crop) to ``resolution``×``resolution`` with PIL's Lanczos filter. That is the
default (``--transform`` unset) ``scale`` of the official κ-FC ``scripts/dataset_tool.py`` (NazirNayal8/MixFlow,
commit 64bc628; from EDM's tool), with which the authors made their 64×64 FFHQ / AFHQv2 sets.

Reference size (``reference_data.limit``): the official FID-10K of FFHQ / AFHQv2 compares the samples with the
first 10,000 images of the data set as its loader lists them (class folders, then their ``.png`` files; the test
loader does not shuffle), so those recipes take the first 10,000 of this module's sorted listing. The official
loader lists with ``os.listdir``, whose order is the file system's; for the ``dataset_tool.py`` layout
(``00000/img00000000.png``, ...) the sorted listing is the image-index order.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np

from mixflow_bench.data.cifar_archive import read_cifar10_train
from mixflow_bench.data.sources import open_folder
from mixflow_bench.errors import UserError
from mixflow_bench.metrics.npz_stream import NpzFormatError
from mixflow_bench.metrics.pack import write_image_stream

FOLDER_SUFFIXES = (".png", ".jpg", ".jpeg")
T = TypeVar("T", bound=Sequence)
RESIZE_RULE = "kept when already RxR, else the whole image resized to RxR with PIL Lanczos (official dataset_tool.py)"


def write_images(
    out: str | os.PathLike, images: Iterator[np.ndarray], count: int, size: int,
    progress: Callable[[int], None] | None = None, batch: int = 256,
) -> Path:  # fmt: skip
    """Streams ``count`` uint8 size×size×3 images into the npz ``out`` (atomic: nothing is left on failure)."""
    return write_image_stream(out, images, count, size, size, progress, batch)[0]


def _first(items: T, limit: int | None, what: str) -> T:
    """The first ``limit`` of ``items`` (all when None); a clear error when there are fewer."""
    if limit is None:
        return items
    if len(items) < limit:
        raise NpzFormatError(f"{what} has {len(items)} images; the reference takes the first {limit}")
    return items[:limit]


def cifar10_reference(
    archive: str | os.PathLike, out: str | os.PathLike, progress=None, limit: int | None = None
) -> tuple[Path, int]:
    """The 50K CIFAR-10 training images of ``archive`` (the first ``limit``) -> ``out``; (path, number)."""
    images, _ = read_cifar10_train(archive)
    images = _first(images, limit, str(archive))
    return write_images(out, iter(images), len(images), images.shape[1], progress), len(images)


def folder_files(folder: str | os.PathLike) -> list[str]:
    """The folder's image files: class folders in :func:`open_folder` order, else a flat folder sorted by name."""
    folder = str(folder)
    if not os.path.isdir(folder):
        raise NpzFormatError(f"{folder}: not a directory")
    has_dirs = any(e.is_dir() and not e.name.startswith(".") for e in os.scandir(folder))
    if has_dirs:
        files = [r.origin for r in open_folder(folder).records if r.origin.lower().endswith(FOLDER_SUFFIXES)]
    else:
        files = sorted(
            e.path for e in os.scandir(folder)
            if e.is_file() and not e.name.startswith(".") and e.name.lower().endswith(FOLDER_SUFFIXES)
        )  # fmt: skip
    if not files:
        raise NpzFormatError(f"{folder}: no {'/'.join(FOLDER_SUFFIXES)} images (flat or in class folders)")
    return files


def load_resized(path: str, size: int) -> np.ndarray:
    """One image as uint8 size×size×3 RGB, by :data:`RESIZE_RULE`."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            if im.size != (size, size):
                im = im.resize((size, size), Image.Resampling.LANCZOS)
            return np.asarray(im, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise NpzFormatError(f"{path}: cannot read the image ({type(exc).__name__}: {exc})") from exc


def folder_reference(
    folder: str | os.PathLike, out: str | os.PathLike, resolution: int, progress=None, limit: int | None = None
) -> tuple[Path, int]:
    """The images of ``folder`` (the first ``limit`` of :func:`folder_files`, all when None) at
    ``resolution``×``resolution`` -> ``out``; (path, number of images)."""
    if resolution <= 0:
        raise ValueError(f"resolution must be positive, got {resolution}")
    files = _first(folder_files(folder), limit, str(folder))
    images = (load_resized(f, resolution) for f in files)
    return write_images(out, images, len(files), resolution, progress), len(files)


class ReferenceMissingError(UserError, ValueError):
    """A recipe's reference npz does not exist and cannot be built without the user's data."""


def prepare_command(recipe: str, dataset: str) -> str:
    source = "" if dataset == "cifar10" else " --source FOLDER"
    return f"mixflow-bench data prepare --reference --recipe {recipe}{source}"


def build_reference(evaluation, recipe: str, source: str | os.PathLike | None = None, out=None, progress=None):
    """Build ``evaluation.reference`` (or ``out``) from ``evaluation.reference_data`` (a recipe's eval section);
    CIFAR-10 from ``source`` or the archive the recipe names (an artifact is fetched through the hub), an image
    folder from ``source``. Returns (path, number of images)."""
    spec = evaluation.reference_data
    if spec is None:
        raise ValueError(f"recipe {recipe} has no eval.reference_data: it names no data set to build a reference of")
    out = out or evaluation.reference
    if not out or not str(out).endswith(".npz"):
        raise ValueError(f"recipe {recipe}: eval.reference must be an .npz path to write, got {out!r}")
    if spec.dataset == "cifar10":
        archive = source or spec.archive
        if archive is not None and not Path(archive).exists():
            from mixflow_bench.hub import fetch, registry

            if str(archive) not in registry():
                raise ValueError(f"{archive}: no such file and not an artifact name")
            archive = fetch(str(archive))
        return cifar10_reference(archive, out, progress, spec.limit)
    if source is None:
        raise ReferenceMissingError(
            f"{recipe}: reference {out} is missing; build it from your {spec.resolution}x{spec.resolution} training "
            f"images with `{prepare_command(recipe, spec.dataset)}`"
        )
    return folder_reference(source, out, spec.resolution, progress, spec.limit)


def ensure_reference(evaluation, recipe: str) -> Path:
    """The recipe's reference npz: kept when it exists, built when the suite can fetch the data (CIFAR-10),
    else :class:`ReferenceMissingError` naming the ``data prepare`` command to run."""
    out = Path(evaluation.reference)
    if out.exists():
        return out
    return build_reference(evaluation, recipe)[0]
