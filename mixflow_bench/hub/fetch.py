"""Fetching artifacts into the cache, verifying them, and reporting what the cache holds."""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from filelock import Timeout

from mixflow_bench.hub.cache import HashLock, artifact_dir, atomic_write_text, lock_for, sha256_file
from mixflow_bench.hub.http import (
    DownloadError,
    DownloadPolicy,
    IntegrityError,
    discard,
    download,
    finish,
    partial_path,
)
from mixflow_bench.hub.registry import Artifact, get_artifact

State = Literal["missing", "present", "verified"]


class OfflineError(FileNotFoundError):
    """An artifact that is not in the cache while offline."""


@dataclass(frozen=True)
class ArtifactStatus:
    """What the cache holds for one artifact. ``verified`` means the hash was checked for this very file."""

    name: str
    kind: str
    state: State
    path: Path | None
    size: int | None  # bytes on disk (None when missing)
    expected_size: int | None  # published size, else the size recorded in the hash lock
    partial_bytes: int = 0  # bytes of an unfinished download


def _stamp_path(name: str) -> Path:
    return artifact_dir(name) / "verified.json"


def _write_stamp(name: str, path: Path, sha256: str) -> None:
    st = path.stat()
    stamp = {"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha256}
    atomic_write_text(_stamp_path(name), json.dumps(stamp) + "\n")


def _expected_sha256(art: Artifact, lock: HashLock) -> tuple[str | None, str]:
    if art.sha256 is not None:
        return art.sha256, "the registry"
    entry = lock.get(art.name)
    if entry is not None:
        return entry["sha256"], f"the hash lock {lock.path}"
    return None, ""


def verify_file(art: Artifact, path: Path, *, record: bool = False, source: str | None = None) -> str:
    """Check ``path`` against the registry (size, sha256 or its prefix) and the hash lock; return its sha256.

    With ``record=True`` a file whose hash is published nowhere has its hash recorded in the lock.
    Raises :class:`IntegrityError` naming the mismatch.
    """
    lock = HashLock()
    size = path.stat().st_size
    if art.size is not None and size != art.size:
        raise IntegrityError(f"{art.name}: {path} has {size} bytes, the registry expects {art.size}")
    entry = lock.get(art.name)
    if art.size is None and entry is not None and entry.get("size") not in (None, size):
        raise IntegrityError(
            f"{art.name}: {path} has {size} bytes, but {entry['size']} were recorded in {lock.path} "
            f"on first download; refetch it with `mixflow-bench download {art.name} --force`"
        )
    actual = sha256_file(path)
    expected, where = _expected_sha256(art, lock)
    if expected is not None and actual != expected:
        raise IntegrityError(
            f"{art.name}: sha256 of {path} is {actual}, but {where} says {expected}; the file is corrupt "
            f"or was changed. Refetch it with `mixflow-bench download {art.name} --force` (if the upstream "
            f"file really changed, remove its entry from {lock.path})"
        )
    if art.sha256_prefix is not None and not actual.startswith(art.sha256_prefix):
        raise IntegrityError(
            f"{art.name}: sha256 of {path} is {actual}, which does not start with the published "
            f"prefix {art.sha256_prefix}"
        )
    if expected is None and record:
        lock.record(art.name, actual, size, source or art.source)
    return actual


@contextmanager
def _locked(art: Artifact, progress: bool):
    lock = lock_for(art.name)
    try:
        lock.acquire(timeout=0.5)
    except Timeout:
        if progress:
            from rich.console import Console

            Console(stderr=True).print(f"[dim]waiting for another process downloading {art.name}…[/dim]")
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def _offline_error(art: Artifact, where: str) -> OfflineError:
    return OfflineError(
        f"artifact {art.name!r} ({art.description}) is not in the cache ({where}) and offline mode is on; "
        f"fetch it first with: mixflow-bench download {art.name}"
    )


def fetch(
    name: str,
    *,
    offline: bool = False,
    progress: bool = True,
    force: bool = False,
    policy: DownloadPolicy | None = None,
) -> Path:
    """Return the verified local file of artifact ``name``, downloading it first unless it is cached.

    A cached file is re-verified (size and sha256) on every call; a mismatch raises :class:`IntegrityError`.
    ``force`` downloads again even when a good copy exists.
    """
    art = get_artifact(name)
    if art.hf is not None:
        return _fetch_hf(art, offline=offline, progress=progress, force=force)
    dest = artifact_dir(art.name) / art.filename
    with _locked(art, progress):
        if dest.exists() and not force:
            sha = verify_file(art, dest, record=True)
            _write_stamp(art.name, dest, sha)
            return dest
        if offline:
            raise _offline_error(art, str(dest))
        if force:
            discard(dest)
        download(art.urls, dest, expected_size=art.size, policy=policy, progress=progress, label=art.name)
        try:
            sha = verify_file(art, partial_path(dest), record=True)
        except IntegrityError:
            discard(dest)
            raise
        finish(dest)
        _write_stamp(art.name, dest, sha)
        return dest


def _hf_cache_dir() -> str | None:
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return str(Path(os.environ["HF_HOME"]) / "hub")
    return None


def _fetch_hf(art: Artifact, *, offline: bool, progress: bool, force: bool) -> Path:
    import huggingface_hub
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError

    hf = art.hf
    assert hf is not None
    endpoint = os.environ.get("HF_ENDPOINT") or None
    bars_were_off = huggingface_hub.utils.are_progress_bars_disabled()
    if not progress:
        huggingface_hub.utils.disable_progress_bars()
    try:
        with _locked(art, progress):
            paths = []
            for filename in (hf.filename, *hf.companions):
                try:
                    paths.append(
                        hf_hub_download(
                            hf.repo_id,
                            filename,
                            revision=hf.revision,
                            repo_type=hf.repo_type,
                            cache_dir=_hf_cache_dir(),
                            endpoint=endpoint,
                            force_download=force and not offline,
                            local_files_only=offline,
                        )
                    )
                except LocalEntryNotFoundError as exc:
                    if offline:
                        raise _offline_error(art, f"Hugging Face cache, {hf.repo_id}/{filename}") from exc
                    raise DownloadError(f"{art.name}: cannot reach {hf.repo_id}/{filename}: {exc}") from exc
                except EntryNotFoundError as exc:
                    msg = f"{art.name}: {filename} not found in {hf.repo_id}@{hf.revision}"
                    raise DownloadError(msg) from exc
                except HfHubHTTPError as exc:
                    msg = f"{art.name}: downloading {hf.repo_id}/{filename} failed: {exc}"
                    raise DownloadError(msg) from exc
            path = Path(paths[0])
            sha = verify_file(art, path, record=True, source=hf.url)
            _write_stamp(art.name, path, sha)
            return path
    finally:
        if not progress and not bars_were_off:
            huggingface_hub.utils.enable_progress_bars()


def _cached_path(art: Artifact) -> Path | None:
    if art.hf is None:
        path = artifact_dir(art.name) / art.filename
        return path if path.exists() else None
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(
        art.hf.repo_id, art.hf.filename, cache_dir=_hf_cache_dir(), revision=art.hf.revision,
        repo_type=art.hf.repo_type,
    )
    return Path(found) if isinstance(found, str) and Path(found).exists() else None


def status(name: str, *, deep: bool = False) -> ArtifactStatus:
    """What the cache holds for ``name``, without downloading.

    ``verified`` needs a verification record matching the file's size and mtime (cheap); ``deep=True``
    re-hashes the file instead.
    """
    art = get_artifact(name)
    lock_entry = HashLock().get(art.name)
    expected_size = art.size if art.size is not None else (lock_entry or {}).get("size")
    path = _cached_path(art)
    partial = 0
    if art.hf is None:
        part = partial_path(artifact_dir(art.name) / art.filename)
        partial = part.stat().st_size if part.exists() else 0
    if path is None:
        return ArtifactStatus(art.name, art.kind, "missing", None, None, expected_size, partial)
    st = path.stat()
    state: State = "present"
    if deep:
        try:
            verify_file(art, path)
            expected, _ = _expected_sha256(art, HashLock())
            state = "verified" if expected is not None else "present"
        except IntegrityError:
            state = "present"
    else:
        stamp_file = _stamp_path(art.name)
        if stamp_file.exists():
            try:
                stamp = json.loads(stamp_file.read_text())
            except json.JSONDecodeError:
                stamp = {}
            expected, _ = _expected_sha256(art, HashLock())
            if (
                stamp.get("path") == str(path)
                and stamp.get("size") == st.st_size
                and stamp.get("mtime_ns") == st.st_mtime_ns
                and expected is not None
                and stamp.get("sha256") == expected
            ):
                state = "verified"
    return ArtifactStatus(art.name, art.kind, state, path, st.st_size, expected_size, partial)
