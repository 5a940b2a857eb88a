"""A folder of PNG/JPEG images -> an ADM sample npz (``arr_0``: uint8 N×H×W×3), in sorted file order, streamed."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from mixflow_bench.metrics.npz_stream import NpzFormatError, NpzImageWriter

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def list_images(folder: str | os.PathLike, suffixes: tuple[str, ...] = IMAGE_SUFFIXES) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise NpzFormatError(f"{folder}: not a directory")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in suffixes)
    if not files:
        raise NpzFormatError(f"{folder}: no {'/'.join(suffixes)} files")
    return files


def _load_rgb(path: Path) -> np.ndarray:
    """The image as uint8 H×W×3; one line naming the file when it is damaged, not an image, or not RGB."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            if im.mode in ("L", "P"):
                im = im.convert("RGB")
            if im.mode != "RGB":
                raise NpzFormatError(f"{path}: image mode {im.mode} is not RGB (or grayscale/palette)")
            return np.asarray(im, dtype=np.uint8)
    except (OSError, SyntaxError, ValueError) as exc:  # truncated, not an image (UnidentifiedImageError), ...
        if isinstance(exc, NpzFormatError):
            raise
        raise NpzFormatError(f"{path}: not a readable PNG/JPEG image ({exc})") from exc


def pack_folder(
    folder: str | os.PathLike,
    out: str | os.PathLike,
    batch: int = 256,
    progress: Callable[[int], None] | None = None,
) -> tuple[Path, tuple[int, int, int, int]]:
    """Writes every PNG/JPEG of ``folder`` (sorted by name) into ``out``; all images must have one size."""
    files = list_images(folder)
    first = _load_rgb(files[0])
    h, w = first.shape[:2]

    def images():
        for path in files:
            img = _load_rgb(path)
            if img.shape != (h, w, 3):
                raise NpzFormatError(
                    f"{path}: size {img.shape[1]}×{img.shape[0]} differs from {w}×{h} of "
                    f"{files[0].name}; all images must have one size"
                )
            yield img

    return write_image_stream(out, images(), len(files), h, w, progress, batch)


def write_image_stream(
    out: str | os.PathLike,
    images: Iterable[np.ndarray],
    count: int,
    height: int,
    width: int,
    progress: Callable[[int], None] | None = None,
    batch: int = 256,
) -> tuple[Path, tuple[int, int, int, int]]:
    """Streams ``count`` uint8 H×W×3 images into the npz ``out``, ``batch`` at a time (atomic: nothing is left
    on failure); returns the path and the array's shape."""
    writer = NpzImageWriter(out, count, height, width)
    try:
        buf: list[np.ndarray] = []
        for img in images:
            buf.append(img)
            if len(buf) == batch:
                writer.write(np.stack(buf))
                if progress:
                    progress(len(buf))
                buf = []
        if buf:
            writer.write(np.stack(buf))
            if progress:
                progress(len(buf))
        return writer.close(), writer.shape
    except BaseException:
        writer.abort()
        raise
