"""The local cache: where artifacts live, the hash lock file, and hashing.

Layout under ``$MIXFLOW_BENCH_HOME`` (default ``$XDG_CACHE_HOME/mixflow-bench``, that is
``~/.cache/mixflow-bench``)::

    artifacts/<name>/<filename>            directly downloaded files (and <filename>.partial while in flight)
    locks/<name>.lock                      per-artifact inter-process lock
    hashes.lock.json                       sha256 and size recorded on first download of unpublished hashes
    ref-stats/<sha256>-<network>.npz       Inception statistics of reference batches (mixflow_bench.metrics.reference)

Hugging Face artifacts live in the Hugging Face cache layout (``$HF_HUB_CACHE``); a file copied by hand to
``artifacts/<name>/<filename>`` is used as well. Every file is created with the permissions the umask
allows (a cache shared by a group works with ``umask 002``), and a cache without write access is read as it
is: nothing is written unless something has to be downloaded.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from filelock import FileLock

from mixflow_bench.atomic import atomic_write_text, default_file_mode

HOME_ENV = "MIXFLOW_BENCH_HOME"
HASH_LOCK_NAME = "hashes.lock.json"


def hub_home() -> Path:
    """The cache root (created on demand by the writers, not here)."""
    env = os.environ.get(HOME_ENV)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg).expanduser() / "mixflow-bench"


def artifact_dir(name: str) -> Path:
    return hub_home() / "artifacts" / name


def lock_for(name: str) -> FileLock:
    """The inter-process lock guarding downloads of artifact ``name``."""
    path = hub_home() / "locks" / f"{name}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(path), mode=default_file_mode())


def sha256_file(path: Path, on_bytes: Callable[[int], None] | None = None, chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file, read in chunks (``on_bytes`` is told how many bytes each chunk had)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
            if on_bytes is not None:
                on_bytes(len(block))
    return digest.hexdigest()


class HashLock:
    """The ``hashes.lock.json`` file: artifact name -> {sha256, size, source, recorded}."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or hub_home() / HASH_LOCK_NAME

    def _guard(self) -> FileLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return FileLock(str(self.path) + ".lock", mode=default_file_mode())

    def read(self) -> dict[str, dict[str, Any]]:
        if not self.path.exists():
            return {}
        try:
            data = json.loads(self.path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"hash lock {self.path} is not valid JSON ({exc}); fix or remove it") from exc
        if not isinstance(data, dict):
            raise ValueError(f"hash lock {self.path} must hold a JSON object")
        return data

    def get(self, name: str) -> dict[str, Any] | None:
        return self.read().get(name)

    def record(self, name: str, sha256: str, size: int, source: str) -> None:
        """Record the hash of a first download; a different existing record is an error, never overwritten."""
        with self._guard():
            data = self.read()
            old = data.get(name)
            if old is not None and old.get("sha256") != sha256:
                raise ValueError(
                    f"{name}: hash lock {self.path} already records sha256 {old.get('sha256')}, not {sha256}"
                )
            data[name] = {
                "sha256": sha256,
                "size": size,
                "source": source,
                "recorded": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            }
            atomic_write_text(self.path, json.dumps(data, indent=2, sort_keys=True) + "\n")

    def replace(self, name: str, sha256: str, size: int, source: str) -> dict[str, Any] | None:
        """Record a new hash for ``name`` over an existing one (a repair); returns the entry it replaced."""
        with self._guard():
            data = self.read()
            old = data.get(name)
            data[name] = {
                "sha256": sha256,
                "size": size,
                "source": source,
                "recorded": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            }
            atomic_write_text(self.path, json.dumps(data, indent=2, sort_keys=True) + "\n")
            return old

    def forget(self, name: str) -> None:
        with self._guard():
            data = self.read()
            if data.pop(name, None) is not None:
                atomic_write_text(self.path, json.dumps(data, indent=2, sort_keys=True) + "\n")
