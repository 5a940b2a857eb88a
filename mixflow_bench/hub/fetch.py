"""Fetching artifacts into the cache, verifying them, and reporting what the cache holds.

Every file goes through one transport (:mod:`mixflow_bench.hub.http`: resume, retries, stall and low-speed
timeouts, Retry-After, full-disk errors), Hugging Face files included; those are stored in the Hugging Face
cache layout (``blobs/<sha256>`` with ``snapshots/<commit>/<path>`` links), so that ``from_pretrained`` and
``hf_hub_download`` find them too. A file is marked good (``verified.json`` beside the artifact, keyed by the
file's device and inode, size and mtime, so the same cache seen through a symbolic link or another mount point
keeps its marker) only after its hash and content checks passed; later readers trust that marker instead of
re-hashing, and need no lock and no write access. :func:`deep_verify` (``download --verify``) re-hashes anyway,
for corruption that keeps a file's size and mtime.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from filelock import Timeout

from mixflow_bench.hub.cache import HashLock, artifact_dir, atomic_write_text, hub_home, lock_for, sha256_file
from mixflow_bench.hub.http import (
    DiskFullError,
    DownloadError,
    DownloadPolicy,
    IntegrityError,
    discard,
    download,
    finish,
    partial_path,
    report_event,
    retry_delay,
)
from mixflow_bench.hub.offline import OFFLINE_ENV, offline_mode
from mixflow_bench.hub.registry import Artifact, get_artifact, integrity

State = Literal["missing", "present", "unverified", "verified"]
UNVERIFIED = "unverified (first download)"
_SHA256 = re.compile(r"[0-9a-f]{64}")


class OfflineError(FileNotFoundError):
    """An artifact that is not in the cache while offline."""


@dataclass(frozen=True)
class ArtifactStatus:
    """What the cache holds for one artifact.

    ``state``: ``verified`` (checked against the host's or a pinned hash), ``unverified`` (matches the hash
    recorded at its first download, nothing more), ``present`` (not checked yet) or ``missing``.
    """

    name: str
    kind: str
    state: State
    path: Path | None
    size: int | None  # bytes on disk (None when missing)
    expected_size: int | None  # published size, else the size recorded in the hash lock
    partial_bytes: int = 0  # bytes of an unfinished download
    integrity: str = UNVERIFIED  # how a download is checked (registry.integrity)


# ---------------------------------------------------------------------------------------------- markers


def _stamp_path(name: str) -> Path:
    return artifact_dir(name) / "verified.json"


def _read_stamp(name: str) -> dict[str, Any]:
    try:
        data = json.loads(_stamp_path(name).read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_stamp(name: str, path: Path, sha256: str, checked_by: str) -> None:
    """Record that ``path`` passed its checks; skipped quietly where the cache is not writable."""
    st = path.stat()
    stamp = {"path": str(path), "device": st.st_dev, "inode": st.st_ino, "size": st.st_size,
             "mtime_ns": st.st_mtime_ns, "sha256": sha256, "checked_by": checked_by}  # fmt: skip
    with suppress(OSError):
        atomic_write_text(_stamp_path(name), json.dumps(stamp) + "\n")


def _stamp_for(art: Artifact, path: Path) -> dict[str, Any] | None:
    """The marker of ``path`` if it still describes the file (same file: device and inode, or the resolved path
    for markers written before those were recorded; same size and mtime) and the expected hash."""
    stamp = _read_stamp(art.name)
    try:
        st = path.stat()
    except OSError:
        return None
    if "inode" in stamp:
        same_file = (stamp.get("device"), stamp.get("inode")) == (st.st_dev, st.st_ino)
    else:
        same_file = os.path.realpath(str(stamp.get("path", ""))) == os.path.realpath(path)
    if not same_file or stamp.get("size") != st.st_size or stamp.get("mtime_ns") != st.st_mtime_ns:
        return None
    expected = art.sha256 or (HashLock().get(art.name) or {}).get("sha256")
    if expected is not None and stamp.get("sha256") != expected:
        return None
    return stamp


# ------------------------------------------------------------------------------------------ verification


def _host_sha256(path: Path) -> str | None:
    """The sha256 the Hugging Face hub published for an LFS file: its blob's name in the HF cache."""
    name = Path(os.path.realpath(path)).name
    return name if _SHA256.fullmatch(name) else None


def verify_file(
    art: Artifact,
    path: Path,
    *,
    record: bool = False,
    source: str | None = None,
    host_sha256: str | None = None,
    replace_record: bool = False,
    report: Callable[[str], None] | None = None,
) -> str:
    """Check ``path`` against the registry (size, sha256 or its prefix), the host's sha256 and the hash lock.

    Returns the file's sha256. With ``record=True`` the hash is recorded in the lock (``replace_record``, for
    a forced download, accepts a file that differs from the record, and the record is then replaced and
    reported through ``report``). Raises :class:`IntegrityError` naming the mismatch.
    """
    lock = HashLock()
    size = path.stat().st_size
    if art.size is not None and size != art.size:
        raise IntegrityError(f"{art.name}: {path} has {size} bytes, the registry expects {art.size}")
    entry = lock.get(art.name)
    if art.size is None and entry is not None and entry.get("size") not in (None, size):
        if not replace_record:
            raise IntegrityError(
                f"{art.name}: {path} has {size} bytes, but {entry['size']} were recorded in {lock.path} "
                f"on first download; replace the file and the record with `mixflow-bench download {art.name} "
                f"--force`"
            )
    actual = sha256_file(path)
    if art.sha256 is not None and actual != art.sha256:
        raise IntegrityError(
            f"{art.name}: sha256 of {path} is {actual}, but the registry pins {art.sha256} "
            f"({art.sha256_source or 'published'}); the file is corrupt or not the published one: download it "
            f"again with `mixflow-bench download {art.name} --force`"
        )
    if host_sha256 is not None and actual != host_sha256:
        raise IntegrityError(
            f"{art.name}: sha256 of {path} is {actual}, but the host publishes {host_sha256}; the file is "
            f"corrupt: download it again with `mixflow-bench download {art.name} --force`"
        )
    if art.sha256_prefix is not None and not actual.startswith(art.sha256_prefix):
        raise IntegrityError(
            f"{art.name}: sha256 of {path} is {actual}, which does not start with the published "
            f"prefix {art.sha256_prefix}; download it again with `mixflow-bench download {art.name} --force`"
        )
    if entry is not None and entry.get("sha256") != actual:
        if not replace_record:
            raise IntegrityError(
                f"{art.name}: sha256 of {path} is {actual}, but the hash lock {lock.path} says "
                f"{entry.get('sha256')} (recorded {entry.get('recorded', '?')}); the file is corrupt or was "
                f"changed. Replace the file and the record with `mixflow-bench download {art.name} --force`"
            )
    if record:
        _record(art, actual, size, source, report)
    return actual


def _record(art: Artifact, sha256: str, size: int, source: str | None, report: Callable[[str], None] | None) -> None:
    """Record a checked file's hash in the lock (replacing a different record: a repair, reported)."""
    lock = HashLock()
    entry = lock.get(art.name)
    if entry is not None and entry.get("sha256") == sha256 and entry.get("size") in (None, size):
        return
    try:
        if entry is None:
            lock.record(art.name, sha256, size, source or art.source)
            return
        old = lock.replace(art.name, sha256, size, source or art.source)
    except OSError:  # a read-only cache: the check itself passed
        return
    if report is not None and old is not None:
        report(
            f"{art.name}: replaced the hash lock record sha256 {old.get('sha256')} ({old.get('size')} bytes, "
            f"recorded {old.get('recorded', '?')}) by {sha256} ({size} bytes)"
        )


def _checked_by(art: Artifact, host_sha256: str | None) -> str:
    how = integrity(art)
    if how == "host sha256" and host_sha256 is None:  # a non-LFS file: the hub publishes no sha256
        return UNVERIFIED
    return how


def _accept(
    art: Artifact,
    path: Path,
    *,
    host_sha256: str | None = None,
    source: str | None = None,
    replace_record: bool = False,
    report: Callable[[str], None] | None = None,
    stamp: bool = True,
) -> str:
    """Full check of a file (hashes, then its content), then the marker that spares later readers the work."""
    from mixflow_bench.hub.checkpoint import sanity_check

    sha = verify_file(art, path, host_sha256=host_sha256, replace_record=replace_record)
    sanity_check(art, path)
    _record(art, sha, path.stat().st_size, source, report)
    if stamp:
        _write_stamp(art.name, path, sha, _checked_by(art, host_sha256))
    return sha


def _use_cached(art: Artifact, path: Path, host_sha256: str | None = None) -> Path:
    """A cached file: trusted through its marker when it is unchanged, checked in full (read only) otherwise."""
    if _stamp_for(art, path) is None:
        _accept(art, path, host_sha256=host_sha256)
    return path


# ------------------------------------------------------------------------------------------------ errors


def _manual_path(art: Artifact) -> Path:
    return artifact_dir(art.name) / art.filename


def _source_url(art: Artifact) -> str:
    """Where the file comes from, on the Hugging Face endpoint in use (HF_ENDPOINT) for hub files."""
    if art.hf is None:
        return art.source
    from huggingface_hub import hf_hub_url

    hf = art.hf
    return hf_hub_url(hf.repo_id, hf.filename, repo_type=hf.repo_type, revision=hf.revision, endpoint=_endpoint())


def _unavailable(art: Artifact, why: str) -> str:
    """What to do about an artifact this machine cannot download: its URL, where a copy goes, the command."""
    companions = ""
    if art.hf is not None and art.hf.companions:
        companions = f" (with {', '.join(Path(c).name for c in art.hf.companions)} beside it)"
    if art.hf is not None:
        caches = f"HF_HUB_CACHE ({_hf_cache_dir()}, where Hugging Face files live)"
    else:
        caches = f"MIXFLOW_BENCH_HOME ({hub_home()})"
    return (
        f"artifact {art.name!r} ({art.description}) is not in the cache and cannot be downloaded here: {why}. "
        f"URL: {_source_url(art)} . On a machine with network run `mixflow-bench download {art.name}` with the "
        f"same {caches}, or put a copy of the file at {_manual_path(art)}{companions}"
    )


@contextmanager
def _locked(art: Artifact, progress: bool):
    try:
        lock = lock_for(art.name)
        lock.acquire(timeout=0.5)
    except Timeout:  # one line, also without progress bars: a silent wait looks like a hang
        report_event(None, f"{art.name}: waiting for another process that is downloading it (lock {lock.lock_file})")
        lock.acquire()
    except OSError as exc:
        raise DownloadError(
            f"{art.name}: the cache {hub_home()} is not writable ({exc}); a read-only cache can only serve files it "
            f"already holds. {_unavailable(art, 'no write access')}"
        ) from exc
    try:
        yield
    finally:
        lock.release()


# ------------------------------------------------------------------------------------------------- fetch


def fetch(
    name: str,
    *,
    offline: bool | None = None,
    progress: bool = True,
    force: bool = False,
    policy: DownloadPolicy | None = None,
    report: Callable[[str], None] | None = None,
) -> Path:
    """Return the checked local file of artifact ``name``, downloading it first unless it is cached.

    ``offline`` (default: :func:`~mixflow_bench.hub.offline.offline_mode`) never opens a connection. A cached
    file whose marker still matches is returned at once; otherwise it is re-verified (read only). ``force``
    downloads again and replaces the file and a different hash-lock record (a repair), telling ``report``.
    """
    art = get_artifact(name)
    offline = offline_mode() if offline is None else offline
    policy = policy or DownloadPolicy.from_env()
    if art.hf is not None:
        return _fetch_hf(art, offline=offline, progress=progress, force=force, policy=policy, report=report)
    dest = artifact_dir(art.name) / art.filename
    if dest.exists() and not force:
        return _use_cached(art, dest)
    if offline:
        raise OfflineError(_unavailable(art, f"offline mode is on ({OFFLINE_ENV}=1 or --offline)"))
    with _locked(art, progress):
        if dest.exists() and not force:  # another process finished it while this one waited
            return _use_cached(art, dest)
        if force:
            discard(dest)
        try:
            download(art.urls, dest, expected_size=art.size, policy=policy, progress=progress, label=art.name)
        except (IntegrityError, DiskFullError):
            raise
        except DownloadError as exc:
            raise DownloadError(_unavailable(art, str(exc))) from exc
        old = sha256_file(dest) if force and report is not None and dest.exists() else None
        try:
            sha = _accept(art, partial_path(dest), replace_record=force, report=report, stamp=False)
        except IntegrityError:
            discard(dest)
            raise
        finish(dest)
        _write_stamp(art.name, dest, sha, _checked_by(art, None))
        if old is not None and report is not None and old != sha:
            report(f"{art.name}: replaced the cached file {dest} (sha256 {old}) by the new download (sha256 {sha})")
        return dest


def _hf_cache_dir() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]) / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def _hf_cached(art: Artifact, filename: str) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    assert art.hf is not None
    found = try_to_load_from_cache(
        art.hf.repo_id, filename, cache_dir=str(_hf_cache_dir()), revision=art.hf.revision,
        repo_type=art.hf.repo_type,
    )  # fmt: skip
    return Path(found) if isinstance(found, str) and Path(found).exists() else None


def _fetch_hf(
    art: Artifact,
    *,
    offline: bool,
    progress: bool,
    force: bool,
    policy: DownloadPolicy,
    report: Callable[[str], None] | None,
) -> Path:
    hf = art.hf
    assert hf is not None
    manual = _manual_path(art)
    if manual.exists() and not force:  # a copy placed by hand
        return _use_cached(art, manual)
    files = (hf.filename, *hf.companions)
    cached = {f: _hf_cached(art, f) for f in files}
    main = cached[hf.filename]
    if main is not None and not force and all(cached.values()):
        return _use_cached(art, main, _host_sha256(main))
    if offline:
        raise OfflineError(_unavailable(art, f"offline mode is on ({OFFLINE_ENV}=1, HF_HUB_OFFLINE=1 or --offline)"))
    with _locked(art, progress):
        paths: dict[str, tuple[Path, str | None]] = {}
        for filename in files:
            paths[filename] = _hf_download(art, filename, force=force, policy=policy, progress=progress)
        path, host = paths[hf.filename]
        try:  # the hash lock records the commit the file came from (most entries follow a branch, not a commit)
            _accept(art, path, host_sha256=host, source=_commit_url(art, path), replace_record=force, report=report)
        except IntegrityError:
            _drop_hf_file(path)
            raise
        if force and manual.exists():
            manual.unlink()
            if report is not None:
                report(f"{art.name}: removed the copy placed by hand at {manual}; the download replaces it")
        return path


def _commit_url(art: Artifact, pointer: Path) -> str:
    """The file's URL at the commit it was downloaded from (``snapshots/<commit>/<filename>`` of the HF cache)."""
    from huggingface_hub import hf_hub_url

    hf = art.hf
    assert hf is not None
    commit = pointer.parents[len(Path(hf.filename).parts) - 1].name
    return hf_hub_url(hf.repo_id, hf.filename, repo_type=hf.repo_type, revision=commit, endpoint=_endpoint())


def _drop_hf_file(path: Path) -> None:
    """Remove a bad blob and its snapshot link, so that the next attempt downloads it again."""
    blob = Path(os.path.realpath(path))
    with suppress(OSError):
        path.unlink()
    with suppress(OSError):
        blob.unlink()


def _hf_metadata(art: Artifact, url: str, policy: DownloadPolicy, progress: bool) -> Any:
    """The hub's metadata of one file (commit, etag = sha256 for LFS files, size, location), with retries."""
    import time

    from huggingface_hub import get_hf_file_metadata
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    failures = 0
    while True:
        wait = None
        try:
            return get_hf_file_metadata(url, timeout=policy.connect_timeout, endpoint=_endpoint())
        except (EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError, GatedRepoError) as exc:
            raise DownloadError(f"{url} does not exist or is not accessible: {exc}") from exc
        except HfHubHTTPError as exc:
            response = getattr(exc, "response", None)
            code = getattr(response, "status_code", None)
            if code is not None and code < 500 and code != 429:
                raise DownloadError(f"{url}: HTTP {code}") from exc
            if code in (429, 503) and response is not None:
                raw = response.headers.get("Retry-After", "")
                wait = float(raw) if raw.strip().isdigit() else None
            reason = f"HTTP {code}"
        except (OSError, ValueError) as exc:
            raise DownloadError(f"{url}: {exc}") from exc
        except Exception as exc:  # connection errors of the HTTP client huggingface_hub uses
            reason = f"{exc.__class__.__name__}: {exc}"
        failures += 1
        if failures > policy.retries:
            raise DownloadError(f"{url}: gave up after {failures} attempts; last error: {reason}")
        delay, why = retry_delay(policy, failures, wait)
        report_event(None, f"{art.name}: {reason}; retry {failures}/{policy.retries} in {delay:.3g} s{why}")
        time.sleep(delay)


def _endpoint() -> str | None:
    return os.environ.get("HF_ENDPOINT") or None


def _hf_download(
    art: Artifact, filename: str, *, force: bool, policy: DownloadPolicy, progress: bool
) -> tuple[Path, str | None]:
    """Download one file of a Hugging Face repository into the HF cache layout; (snapshot path, host sha256)."""
    from huggingface_hub import hf_hub_url
    from huggingface_hub.file_download import repo_folder_name

    hf = art.hf
    assert hf is not None
    url = hf_hub_url(hf.repo_id, filename, repo_type=hf.repo_type, revision=hf.revision, endpoint=_endpoint())
    try:
        meta = _hf_metadata(art, url, policy, progress)
    except DownloadError as exc:
        raise DownloadError(_unavailable(art, str(exc))) from exc
    if not meta.commit_hash or not meta.etag:
        raise DownloadError(f"{art.name}: {url} answered without a commit or an ETag; is HF_ENDPOINT a hub?")
    host = meta.etag if _SHA256.fullmatch(meta.etag) else None
    storage = _hf_cache_dir() / repo_folder_name(repo_id=hf.repo_id, repo_type=hf.repo_type)
    blob = storage / "blobs" / meta.etag
    pointer = storage / "snapshots" / meta.commit_hash / filename
    if force or not blob.exists():
        if force:
            discard(blob)
        try:
            # the location is a signed CDN URL that changes on every request: the partial file is keyed by the
            # artifact and the file's hash (its ETag), so another process resumes it
            download([meta.location or url], blob, expected_size=meta.size, policy=policy, progress=progress,
                     label=f"{art.name}: {Path(filename).name}",
                     resume_key=f"{art.name}:{filename}:{meta.etag}")  # fmt: skip
        except (IntegrityError, DiskFullError):
            raise
        except DownloadError as exc:
            raise DownloadError(_unavailable(art, str(exc))) from exc
        part = partial_path(blob)
        if host is not None:
            actual = sha256_file(part)
            if actual != host:
                discard(blob)
                raise IntegrityError(
                    f"{art.name}: sha256 of the download of {url} is {actual}, but the hub publishes {host}; "
                    f"the download is corrupt (removed)"
                )
        finish(blob)
    pointer.parent.mkdir(parents=True, exist_ok=True)
    if pointer.is_symlink() or pointer.exists():
        pointer.unlink()
    try:
        pointer.symlink_to(os.path.relpath(blob, pointer.parent))
    except OSError:  # file systems without symbolic links
        import shutil

        shutil.copyfile(blob, pointer)
    if hf.revision != meta.commit_hash:
        atomic_write_text(storage / "refs" / hf.revision, meta.commit_hash)
    return pointer, host


# ------------------------------------------------------------------------------------------------ status


def _cached_path(art: Artifact) -> Path | None:
    manual = _manual_path(art)
    if art.hf is None or manual.exists():
        return manual if manual.exists() else None
    return _hf_cached(art, art.hf.filename)


def deep_verify(name: str) -> tuple[ArtifactStatus, str | None]:
    """Re-hash the cached file of ``name`` whatever its marker says (``download --verify``): its status, and
    the mismatch when it is corrupt (its marker is then dropped, so that it is checked again on every read)."""
    art = get_artifact(name)
    path = _cached_path(art)
    if path is None:
        return status(name), None
    host = _host_sha256(path) if art.hf is not None and path != _manual_path(art) else None
    try:
        sha = verify_file(art, path, host_sha256=host)
    except IntegrityError as exc:
        with suppress(OSError):
            _stamp_path(art.name).unlink()
        return status(name), str(exc)
    _write_stamp(art.name, path, sha, _checked_by(art, host))
    return status(name), None


def status(name: str, *, deep: bool = False) -> ArtifactStatus:
    """What the cache holds for ``name``, without downloading.

    The state comes from the file's marker (cheap: size and mtime); ``deep=True`` re-hashes the file instead.
    """
    art = get_artifact(name)
    lock_entry = HashLock().get(art.name)
    expected_size = art.size if art.size is not None else (lock_entry or {}).get("size")
    path = _cached_path(art)
    how = integrity(art)
    partial = 0
    if art.hf is None:
        part = partial_path(artifact_dir(art.name) / art.filename)
        partial = part.stat().st_size if part.exists() else 0
    if path is None:
        return ArtifactStatus(art.name, art.kind, "missing", None, None, expected_size, partial, how)
    st = path.stat()
    host = _host_sha256(path) if art.hf is not None and path != _manual_path(art) else None
    checked_by: str | None = None
    if deep:
        try:
            verify_file(art, path, host_sha256=host)
            checked_by = _checked_by(art, host)
        except IntegrityError:
            checked_by = None
    else:
        stamp = _stamp_for(art, path)
        checked_by = None if stamp is None else stamp.get("checked_by", UNVERIFIED)
    state: State = "present" if checked_by is None else ("unverified" if checked_by == UNVERIFIED else "verified")
    return ArtifactStatus(art.name, art.kind, state, path, st.st_size, expected_size, partial, checked_by or how)
