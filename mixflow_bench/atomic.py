"""Atomic file writes, used for every file the project produces.

A file is written under a hidden temporary name in its own directory, flushed and synced, then moved onto its
name with ``os.replace``: a reader sees the old file or the whole new one, never a torn one, and a killed
writer leaves at most a ``.<name>.*.tmp`` file behind. (The standard library has no such helper.)
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any


def current_umask() -> int:
    """The process umask, read without changing it where the system allows (Linux ``/proc``)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)  # elsewhere: set and restore at once
    os.umask(mask)
    return mask


def default_file_mode() -> int:
    """The mode a plain ``open(path, "w")`` would give a new file: 0666 less the umask."""
    return 0o666 & ~current_umask()


def temporary_beside(path: str | os.PathLike[str], suffix: str = ".tmp") -> Path:
    """A new empty file ``.<name>.*<suffix>`` in ``path``'s directory (created if missing), to be written and then
    moved onto ``path`` with :func:`move_into_place`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    return Path(name)


def move_into_place(
    tmp: str | os.PathLike[str], path: str | os.PathLike[str], *, mode: int | None = None, durable: bool = False
) -> Path:
    """Give the finished ``tmp`` its permissions and rename it onto ``path``.

    ``mode``: permissions to give the file (default: 0666 less the umask, as ``open`` would; mkstemp alone
    leaves 0600, unreadable to the other users of a shared cache). ``durable``: also sync the directory, so
    that the rename itself survives a power loss where the file system allows.
    """
    path = Path(path)
    os.chmod(tmp, default_file_mode() if mode is None else mode)
    os.replace(tmp, path)
    if durable:
        with contextlib.suppress(OSError):
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
    return path


@contextlib.contextmanager
def atomic_path(
    path: str | os.PathLike[str], *, suffix: str = ".tmp", mode: int | None = None, durable: bool = False
) -> Iterator[Path]:
    """A temporary path beside ``path`` to write; moved onto ``path`` when the block ends, removed on error
    (``mode``, ``durable``: :func:`move_into_place`)."""
    tmp = temporary_beside(path, suffix)
    try:
        yield tmp
        move_into_place(tmp, path, mode=mode, durable=durable)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], Any], **options: Any) -> Path:
    """Call ``write(binary_file)`` and put the synced result at ``path`` atomically (options: :func:`atomic_path`)."""
    with atomic_path(path, **options) as tmp, open(tmp, "wb") as handle:
        write(handle)
        handle.flush()
        os.fsync(handle.fileno())
    return Path(path)


def atomic_write_text(path: str | os.PathLike[str], text: str, **options: Any) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    data = text.encode()
    return atomic_write(path, lambda handle: handle.write(data), **options)
