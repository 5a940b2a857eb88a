"""Streaming access to image arrays stored in ``.npz`` files (ADM's sample/reference format).

``numpy.load`` materialises a whole member; a 50K×256² sample file is ~10 GB, so images are read
here straight from the zip member (stored or deflated) in batches, and written the same way.
Only ``.npy`` format 1.0/2.0, C order, uint8 NHWC RGB image arrays are accepted.
"""

from __future__ import annotations

import os
import zipfile
import zlib
from collections import deque
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import IO

import numpy as np

from mixflow_bench.atomic import move_into_place, temporary_beside

IMAGE_KEY = "arr_0"


class NpzFormatError(ValueError):
    """The file is not a usable ADM-style image npz; the message says why."""


def _read_npy_header(f: IO[bytes], where: str) -> tuple[tuple[int, ...], bool, np.dtype]:
    try:
        version = np.lib.format.read_magic(f)
    except ValueError as exc:
        raise NpzFormatError(f"{where}: not a .npy member ({exc})") from exc
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(f)
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(f)
    raise NpzFormatError(f"{where}: .npy format {version[0]}.{version[1]} is not supported (1.0 or 2.0 only)")


class NpzImageReader:
    """Reads ``arr_0`` (uint8, N×H×W×3) of an npz in batches without loading the whole array."""

    def __init__(self, path: str | os.PathLike, key: str = IMAGE_KEY) -> None:
        self.path = Path(path)
        check_npz_path(self.path)
        self._zip = zipfile.ZipFile(self.path, "r")
        try:
            self._open(key)
        except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
            self._zip.close()
            raise NpzFormatError(f"{self.path}: damaged data ({exc}); write the file again") from exc

    def _open(self, key: str) -> None:
        members = {n[:-4]: n for n in self._zip.namelist() if n.endswith(".npy")}
        self.keys = sorted(members)
        if key not in members:
            self._zip.close()
            raise NpzFormatError(
                f"{self.path}: has no '{key}' array (keys: {', '.join(self.keys) or 'none'})"
            )
        # several image arrays usually means images of mixed sizes were saved as separate arrays
        for other, member in members.items():
            if other == key:
                continue
            with self._zip.open(member) as f:
                shape, _, dtype = _read_npy_header(f, f"{self.path}:{member}")
            if len(shape) == 4:
                self._zip.close()
                raise NpzFormatError(
                    f"{self.path}: holds several image arrays ('{key}', '{other}' {shape}); samples of mixed "
                    "sizes are not supported: put all images, of one size, in a single 'arr_0'"
                )
        self._member = members[key]
        with self._zip.open(self._member) as f:
            shape, fortran, dtype = _read_npy_header(f, f"{self.path}:{self._member}")
            header_bytes = f.tell()
        where = f"{self.path}:{key}"
        if dtype != np.uint8:
            self._zip.close()
            raise NpzFormatError(f"{where}: dtype {dtype} is not uint8 (images must be 0..255 uint8)")
        if len(shape) != 4 or shape[3] != 3:
            self._zip.close()
            raise NpzFormatError(f"{where}: shape {shape} is not N×H×W×3 (NHWC RGB)")
        if fortran:
            self._zip.close()
            raise NpzFormatError(
                f"{where}: Fortran-ordered arrays are not supported (save a C-ordered array)"
            )
        if shape[0] and (shape[1] == 0 or shape[2] == 0):
            self._zip.close()
            raise NpzFormatError(f"{where}: images of size {shape[2]}×{shape[1]}: there are no pixels to evaluate")
        self.shape: tuple[int, int, int, int] = tuple(int(s) for s in shape)  # type: ignore[assignment]
        stored = self._zip.getinfo(self._member).file_size - header_bytes
        if stored < self.num_images * self.image_bytes:
            self._zip.close()
            raise NpzFormatError(
                f"{where}: truncated: the header declares {self.num_images} images of {shape[1]}×{shape[2]}×3 "
                f"({self.num_images * self.image_bytes} bytes) but the array holds {stored} bytes "
                f"({stored // self.image_bytes} whole images)"
            )

    @property
    def num_images(self) -> int:
        return self.shape[0]

    @property
    def image_bytes(self) -> int:
        return self.shape[1] * self.shape[2] * self.shape[3]

    def close(self) -> None:
        self._zip.close()

    def __enter__(self) -> NpzImageReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open_stream(self) -> ImageStream:
        """A fresh sequential stream over the images, from the first one."""
        f = self._zip.open(self._member)
        _read_npy_header(f, str(self.path))
        return ImageStream(f, self.shape, where=f"{self.path}:{IMAGE_KEY}")

    def iter_batches(self, batch_size: int) -> Iterator[np.ndarray]:
        """Yields uint8 arrays of at most ``batch_size`` images, in file order."""
        with self.open_stream() as stream:
            while stream.remaining:
                out = np.empty((min(batch_size, stream.remaining), *self.shape[1:]), np.uint8)
                stream.read_into(out)
                yield out


class ImageStream:
    """Sequential reader over the raw image bytes of one zip member."""

    def __init__(self, f: IO[bytes], shape: tuple[int, int, int, int], where: str = "image array") -> None:
        self._f = f
        self.shape = shape
        self.where = where
        self.remaining = shape[0]

    def read_into(self, out: np.ndarray) -> int:
        """Fills ``out[:n]`` (uint8, n×H×W×3, C-contiguous) with the next n images; returns n."""
        n = min(out.shape[0], self.remaining)
        view = memoryview(out.reshape(-1)).cast("B")[: n * int(np.prod(self.shape[1:]))]
        got = 0
        while got < len(view):
            try:
                k = self._f.readinto(view[got:])
            except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
                raise NpzFormatError(f"{self.where}: damaged data ({exc})") from exc
            if not k:
                raise NpzFormatError(
                    f"{self.where}: truncated: a batch needs {len(view)} bytes, the array ended after {got}"
                )
            got += k
        self.remaining -= n
        return n

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> ImageStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_npz_path(path: Path) -> None:
    """Refuses, with one line naming ``path``, a missing file, a folder or a file that is not a zip archive."""
    if path.is_dir():
        raise NpzFormatError(
            f"{path}: is a folder, not an npz file; pack its PNGs first: mixflow-bench pack {path} "
            f"{path.name or 'images'}.npz"
        )
    if not path.is_file():
        raise NpzFormatError(f"{path}: no such file")
    if not zipfile.is_zipfile(path):
        raise NpzFormatError(
            f"{path}: not an npz file (not a zip archive, or cut short); write it with np.savez"
        )


def verify_npz(path: str | os.PathLike, chunk: int = 1 << 24) -> None:
    """Reads every member of the npz through its CRC-32 check; one line naming the file and member if one is
    damaged (a sequential read, far cheaper than a pass through a network)."""
    path = Path(path)
    check_npz_path(path)
    with zipfile.ZipFile(path) as z:
        for member in z.namelist():
            try:
                with z.open(member) as f:  # read to the end (the CRC is checked there), keeping nothing
                    deque(iter(partial(f.read, chunk), b""), maxlen=0)
            except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
                raise NpzFormatError(f"{path}: damaged data in '{member}' ({exc}); write the file again") from exc


def npz_keys(path: str | os.PathLike) -> list[str]:
    """Names of the arrays in an npz, without reading them."""
    check_npz_path(Path(path))
    with zipfile.ZipFile(path) as z:
        return sorted(n[:-4] for n in z.namelist() if n.endswith(".npy"))


def npz_array_headers(path: str | os.PathLike) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Shape and dtype of every array in an npz, from the ``.npy`` headers alone."""
    path = Path(path)
    check_npz_path(path)
    out: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
    with zipfile.ZipFile(path) as z:
        for member in z.namelist():
            if member.endswith(".npy"):
                with z.open(member) as f:
                    shape, _, dtype = _read_npy_header(f, f"{path}:{member}")
                out[member[:-4]] = (tuple(int(s) for s in shape), dtype)
    return out


class NpzImageWriter:
    """Writes N×H×W×3 uint8 images into ``arr_0`` of a new npz, streaming; atomic on ``close``."""

    def __init__(self, path: str | os.PathLike, num_images: int, height: int, width: int) -> None:
        self.path = Path(path)
        self.shape = (num_images, height, width, 3)
        self._tmp = temporary_beside(self.path)
        self._zip = zipfile.ZipFile(self._tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True)
        self._f = self._zip.open(f"{IMAGE_KEY}.npy", "w", force_zip64=True)
        header = {
            "descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)),
            "fortran_order": False,
            "shape": self.shape,
        }
        np.lib.format.write_array_header_1_0(self._f, header)
        self.written = 0

    def write(self, images: np.ndarray) -> None:
        if images.dtype != np.uint8 or images.shape[1:] != self.shape[1:]:
            raise NpzFormatError(
                f"expected uint8 images of shape {self.shape[1:]}, got {images.dtype} {images.shape[1:]}"
            )
        if self.written + len(images) > self.shape[0]:
            raise NpzFormatError(f"more images than the declared {self.shape[0]}")
        self._f.write(np.ascontiguousarray(images).tobytes())
        self.written += len(images)

    def close(self) -> Path:
        """Finishes the file and moves it into place; refuses if fewer images were written than declared."""
        self._f.close()
        self._zip.close()
        if self.written != self.shape[0]:
            self._tmp.unlink(missing_ok=True)
            raise NpzFormatError(f"wrote {self.written} images, declared {self.shape[0]}; nothing saved")
        return move_into_place(self._tmp, self.path)  # permissions as the umask allows, like any other output

    def abort(self) -> None:
        try:
            self._f.close()
            self._zip.close()
        finally:
            self._tmp.unlink(missing_ok=True)
