"""Resumable HTTP(S) download of one file with retries, timeouts and a progress bar.

Hand-rolled on top of ``requests`` because neither ``requests`` nor ``torch.hub`` resumes an interrupted
transfer: multi-GB checkpoints on Dropbox / Azure blobs must survive dropped connections. Bytes go to
``<dest>.partial`` (flushed per chunk, so a killed process leaves a usable prefix); the next attempt asks for
the rest with an HTTP ``Range`` header (and ``If-Range`` with the validator seen before, so a changed remote
file restarts cleanly). A server that answers ``200`` instead of ``206`` is followed from byte 0. The caller
verifies and renames the finished partial file. Hugging Face files go through the same transport (see
:mod:`mixflow_bench.hub.fetch`). ``Retry-After`` on 429/503 is honoured; a transfer slower than
``low_speed_limit`` for ``low_speed_time`` seconds counts as stalled; a full disk fails at once. Every retry
is one line on stderr.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests
import urllib3
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

ENV_PREFIX = "MIXFLOW_BENCH_DOWNLOAD_"
PERMANENT_STATUS = {400, 401, 403, 404, 405, 410, 451}


class DownloadError(RuntimeError):
    """A download that failed for good (after the retries, or on a permanent HTTP error)."""


class IntegrityError(DownloadError):
    """A file whose size, hash or format is not what the registry says."""


class DiskFullError(DownloadError):
    """No space left for a download: reported at once, never retried as a network error."""


class _Retryable(Exception):
    """A failure worth another attempt (connection dropped, 5xx, stalled); ``wait`` is a server's Retry-After."""

    def __init__(self, message: str, moved: int = 0, wait: float | None = None, progress: bool = True) -> None:
        super().__init__(message)
        self.moved = moved
        self.wait = wait
        self.progress = progress  # False: bytes moved, but too slowly to count as progress


@dataclass(frozen=True)
class DownloadPolicy:
    """Retry and timeout settings. ``retries`` counts consecutive attempts that moved no bytes.

    Each field can be set from the environment as ``MIXFLOW_BENCH_DOWNLOAD_<FIELD>`` (``..._RETRIES=3``).
    """

    retries: int = 5
    backoff: float = 1.0  # first wait in seconds; doubles per consecutive failure
    backoff_max: float = 60.0
    connect_timeout: float = 15.0
    read_timeout: float = 60.0  # seconds without any byte before an attempt fails
    low_speed_limit: int = 1024  # bytes/s; an attempt slower than this for low_speed_time seconds fails
    low_speed_time: float = 60.0
    chunk_size: int = 1 << 20

    @classmethod
    def from_env(cls) -> DownloadPolicy:
        values: dict[str, float | int] = {}
        for name, typ in (
            ("retries", int),
            ("backoff", float),
            ("backoff_max", float),
            ("connect_timeout", float),
            ("read_timeout", float),
            ("low_speed_limit", int),
            ("low_speed_time", float),
            ("chunk_size", int),
        ):
            raw = os.environ.get(ENV_PREFIX + name.upper())
            if raw is not None:
                try:
                    values[name] = typ(raw)
                except ValueError as exc:
                    msg = f"{ENV_PREFIX}{name.upper()}={raw!r} is not a valid {typ.__name__}"
                    raise ValueError(msg) from exc
        return cls(**values)

    def delay(self, failures: int) -> float:
        return min(self.backoff * 2 ** max(failures - 1, 0), self.backoff_max)


def partial_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".partial")


def _meta_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".partial.json")


@contextmanager
def progress_bar(enabled: bool) -> Iterator[Progress | None]:
    """A rich progress display (bytes, rate, ETA) on stderr, or ``None`` when disabled."""
    if not enabled:
        yield None
        return
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=False,
    )
    with progress:
        yield progress


_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


def _content_range(resp: requests.Response) -> tuple[int, int | None]:
    match = _CONTENT_RANGE.match(resp.headers.get("Content-Range", ""))
    if not match:
        raise _Retryable(f"206 without a valid Content-Range ({resp.headers.get('Content-Range')!r})")
    total = None if match.group(3) == "*" else int(match.group(3))
    return int(match.group(1)), total


def download(
    urls: Sequence[str],
    dest: Path,
    *,
    expected_size: int | None = None,
    policy: DownloadPolicy | None = None,
    progress: bool = True,
    label: str | None = None,
    session: requests.Session | None = None,
) -> Path:
    """Download the first working URL of ``urls`` into ``<dest>.partial`` and return that partial path.

    Resumes an existing partial file. Raises :class:`DownloadError` naming every URL's failure.
    """
    policy = policy or DownloadPolicy.from_env()
    dest.parent.mkdir(parents=True, exist_ok=True)
    errors: list[str] = []
    own_session = session is None
    session = session or requests.Session()
    try:
        with progress_bar(progress) as bar:
            for url in urls:
                try:
                    _download_one(url, dest, expected_size, policy, bar, label or dest.name, session)
                    return partial_path(dest)
                except (IntegrityError, DiskFullError):
                    raise
                except DownloadError as exc:
                    errors.append(str(exc))
    finally:
        if own_session:
            session.close()
    raise DownloadError("download failed:\n  " + "\n  ".join(errors))


def report_event(bar: Progress | None, message: str) -> None:
    """One line per retry / stall on stderr: above the progress bar, or as a plain log line without one."""
    console = bar.console if bar is not None else Console(stderr=True, soft_wrap=True)
    console.print(message, markup=False, highlight=False)


def _retry_after(resp: requests.Response) -> float | None:
    """A ``Retry-After`` header in seconds (delta-seconds or an HTTP date), or None."""
    raw = resp.headers.get("Retry-After")
    if not raw:
        return None
    if raw.strip().isdigit():
        return float(raw.strip())
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


def _disk_full(path: Path, needed: int | None) -> DiskFullError:
    free = shutil.disk_usage(path.parent).free
    need = f"{needed:,} more bytes are needed, " if needed is not None else ""
    return DiskFullError(
        f"no space left on the device holding {path.parent}: {need}{free:,} bytes are free; free some space "
        f"(or point MIXFLOW_BENCH_HOME at a larger file system) and run the command again to resume"
    )


def _download_one(
    url: str,
    dest: Path,
    expected_size: int | None,
    policy: DownloadPolicy,
    bar: Progress | None,
    label: str,
    session: requests.Session,
) -> None:
    partial, meta_file = partial_path(dest), _meta_path(dest)
    meta: dict[str, str] = {}
    if partial.exists() and meta_file.exists():
        try:
            meta = json.loads(meta_file.read_text())
        except (OSError, json.JSONDecodeError):
            meta = {}
        if meta.get("url") != url:  # a prefix of a different source: cannot be continued
            partial.unlink()
            meta = {}
    task = bar.add_task(label, total=expected_size) if bar is not None else None
    failures = 0
    attempts = 0
    while True:
        attempts += 1
        offset = partial.stat().st_size if partial.exists() else 0
        moved = 0
        wait: float | None = None
        counts = True
        try:
            moved = _attempt(url, partial, meta_file, meta, offset, expected_size, policy, bar, task, session)
            return
        except _Retryable as exc:
            reason, moved, wait, counts = str(exc), exc.moved, exc.wait, exc.progress
        except requests.Timeout as exc:
            reason = f"timed out (no data for {policy.read_timeout:g} s or no connection in "
            reason += f"{policy.connect_timeout:g} s): {exc.__class__.__name__}"
        except requests.RequestException as exc:
            reason = f"{exc.__class__.__name__}: {exc}"
        moved = max(moved, (partial.stat().st_size if partial.exists() else 0) - offset) if counts else 0
        failures = 0 if moved > 0 else failures + 1
        if failures > policy.retries:
            raise DownloadError(
                f"{url}: gave up after {attempts} attempts ({policy.retries} retries without progress); "
                f"last error: {reason}"
            )
        delay = policy.delay(max(failures, 1)) if wait is None else min(wait, policy.backoff_max)
        why = " (the server's Retry-After)" if wait is not None else ""
        report_event(bar, f"{label}: {reason}; retry {max(failures, 1)}/{policy.retries} in {delay:.3g} s{why}")
        time.sleep(delay)


def _attempt(
    url: str,
    partial: Path,
    meta_file: Path,
    meta: dict[str, str],
    offset: int,
    expected_size: int | None,
    policy: DownloadPolicy,
    bar: Progress | None,
    task: object,
    session: requests.Session,
) -> int:
    headers = {"Accept-Encoding": "identity"}
    if offset > 0:
        headers["Range"] = f"bytes={offset}-"
        etag = meta.get("etag", "")
        validator = etag if etag and not etag.startswith("W/") else meta.get("last_modified")
        if validator:
            headers["If-Range"] = validator
    timeout = (policy.connect_timeout, policy.read_timeout)
    with session.get(url, headers=headers, stream=True, timeout=timeout, allow_redirects=True) as resp:
        code = resp.status_code
        if code == 416 and offset > 0:
            match = re.match(r"bytes\s+\*/(\d+)", resp.headers.get("Content-Range", ""))
            if match and int(match.group(1)) == offset:
                return 0  # the partial file already holds every byte
            partial.unlink(missing_ok=True)
            raise _Retryable(f"HTTP 416 for a resume at byte {offset}; restarting from byte 0")
        if code in PERMANENT_STATUS:
            raise DownloadError(f"{url}: HTTP {code} {resp.reason}")
        if code == 206:
            start, total = _content_range(resp)
            if start != offset:
                partial.unlink(missing_ok=True)
                raise _Retryable(f"server resumed at byte {start}, asked for {offset}; restarting")
            mode = "ab"
        elif code == 200:
            offset, mode = 0, "wb"  # no (or ignored) Range: start over
            length = resp.headers.get("Content-Length")
            total = int(length) if length is not None and length.isdigit() else None
        else:
            wait = _retry_after(resp) if code in (429, 503) else None
            raise _Retryable(f"HTTP {code} {resp.reason}", wait=wait)
        if expected_size is not None and total is not None and total != expected_size:
            raise IntegrityError(
                f"{url}: server reports {total} bytes, the registry expects {expected_size}; not downloading"
            )
        if total is not None and shutil.disk_usage(partial.parent).free < total - offset:
            raise _disk_full(partial, total - offset)
        validators = {"url": url, "etag": resp.headers.get("ETag", ""),
                      "last_modified": resp.headers.get("Last-Modified", "")}
        meta.clear()
        meta.update(validators)
        meta_file.write_text(json.dumps(validators))
        if bar is not None:
            bar.update(task, total=total, completed=offset)  # type: ignore[arg-type]
        written = 0
        window_start, window_bytes = time.monotonic(), 0
        try:
            with open(partial, mode) as fh:
                for chunk in _chunks(resp, policy.chunk_size):
                    fh.write(chunk)
                    fh.flush()
                    written += len(chunk)
                    window_bytes += len(chunk)
                    if bar is not None:
                        bar.update(task, advance=len(chunk))  # type: ignore[arg-type]
                    if expected_size is not None and offset + written > expected_size:
                        raise IntegrityError(f"{url}: more than the expected {expected_size} bytes received")
                    elapsed = time.monotonic() - window_start
                    if elapsed >= policy.low_speed_time:
                        if window_bytes / elapsed < policy.low_speed_limit:
                            raise _Retryable(
                                f"too slow: {window_bytes / elapsed:.0f} B/s for {elapsed:.3g} s (below "
                                f"{policy.low_speed_limit} B/s) at byte {offset + written}",
                                moved=written,
                                progress=False,
                            )
                        window_start, window_bytes = time.monotonic(), 0
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
            if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise _disk_full(partial, None if total is None else total - offset - written) from exc
            stalled = isinstance(exc, (requests.Timeout, urllib3.exceptions.ReadTimeoutError, TimeoutError))
            stalled = stalled or "timed out" in str(exc).lower()
            if stalled:
                what = f"stalled: no data for {policy.read_timeout:g} s at byte {offset + written}"
            else:
                what = f"connection lost at byte {offset + written}: {exc.__class__.__name__}"
            raise _Retryable(what, moved=written) from exc
        if total is not None and offset + written < total:
            raise _Retryable(f"connection closed at byte {offset + written} of {total}", moved=written)
        return written


def _chunks(resp: requests.Response, size: int) -> Iterator[bytes]:
    """Body blocks as soon as they arrive (``read1``), so partial files and progress advance smoothly."""
    raw = resp.raw
    if not hasattr(raw, "read1"):  # urllib3 < 2.3
        yield from (c for c in resp.iter_content(chunk_size=size) if c)
        return
    while True:
        block = raw.read1(size, decode_content=True)
        if not block:
            return
        yield block


def finish(dest: Path) -> None:
    """Move a verified partial file to its final name (atomic) and drop its bookkeeping."""
    os.replace(partial_path(dest), dest)
    _meta_path(dest).unlink(missing_ok=True)


def discard(dest: Path) -> None:
    """Remove a partial file and its bookkeeping (after a failed verification)."""
    partial_path(dest).unlink(missing_ok=True)
    _meta_path(dest).unlink(missing_ok=True)
