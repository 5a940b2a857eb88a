"""Deterministic, streaming ``.npz`` writing.

``numpy.savez`` stamps the current time into the zip headers, so two runs that produce the same arrays give
different bytes; it also needs every array in memory. Here each member is stored uncompressed with a fixed
timestamp and written chunk by chunk, so a 50,000-image ADM batch is assembled from shards without holding it in
memory, and equal arrays always give byte-identical files.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from mixflow_bench.atomic import atomic_path

FIXED_DATE = (1980, 1, 1, 0, 0, 0)


def _member(zf: zipfile.ZipFile, name: str, dtype: np.dtype, shape: tuple[int, ...], chunks: Iterable[np.ndarray]):
    info = zipfile.ZipInfo(f"{name}.npy", date_time=FIXED_DATE)
    info.compress_type = zipfile.ZIP_STORED
    info.external_attr = 0o644 << 16
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": tuple(shape)}
    expected = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    written = 0
    with zf.open(info, "w", force_zip64=True) as f:
        np.lib.format.write_array_header_2_0(f, header)
        for chunk in chunks:
            chunk = np.ascontiguousarray(chunk, dtype=dtype)
            f.write(chunk.tobytes())
            written += chunk.nbytes
    if written != expected:
        raise ValueError(f"member {name}: wrote {written} bytes, shape {shape} needs {expected}")


def write_npz_stream(
    path: Path, members: list[tuple[str, np.dtype, tuple[int, ...], Iterable[np.ndarray]]]
) -> Path:
    """Write ``[(name, dtype, shape, chunks), ...]`` to ``path`` atomically (temporary file, then os.replace)."""
    path = Path(path)
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", allowZip64=True) as zf:
        for name, dtype, shape, chunks in members:
            _member(zf, name, dtype, shape, chunks)
    return path


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    """Deterministic atomic ``savez`` of in-memory arrays."""
    return write_npz_stream(path, [(k, v.dtype, v.shape, [v]) for k, v in arrays.items()])
