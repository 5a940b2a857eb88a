"""Resumable HTTP(S) download of one file with retries, timeouts and a progress bar.

Hand-rolled on top of ``requests`` because neither ``requests`` nor ``torch.hub`` resumes an interrupted
transfer: multi-GB checkpoints on Dropbox / Azure blobs must survive dropped connections. Bytes go to
``<dest>.partial`` (flushed per chunk, so a killed process leaves a usable prefix); the next attempt asks for
the rest with an HTTP ``Range`` header (and ``If-Range`` with the validator seen before, so a changed remote
file restarts cleanly). A partial file is continued by any later process that downloads the same thing: it is
keyed by ``resume_key`` (the artifact and its expected hash; signed CDN URLs change on every request), else by
the URL. A server that answers ``200`` instead of ``206`` is followed from byte 0; only bytes beyond the largest
partial file seen count as progress, so a server that ignores ``Range`` and drops every response gives up after
the retries. The caller
verifies and renames the finished partial file. Hugging Face files go through the same transport (see
:mod:`mixflow_bench.hub.fetch`). ``Retry-After`` on 429/503 is honoured; a transfer slower than
``low_speed_limit`` for ``low_speed_time`` seconds counts as stalled; a full disk fails at once. Every retry
is one line on stderr. Progress is a rich bar in a terminal (the rate and ETA show "stalled" when no byte came
for a few seconds) and a plain line every ``progress_interval`` seconds in a log file.
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
from rich.text import Text

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
    progress_interval: float = 30.0  # seconds between plain progress lines when stderr is not a terminal

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
            ("progress_interval", float),
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


STALL_SECONDS = 5.0  # no byte for this long: the bar shows "stalled" instead of the last rate and ETA


class _StallAwareSpeed(TransferSpeedColumn):
    def render(self, task):  # type: ignore[no-untyped-def]
        last = task.fields.get("last_byte")
        if not task.finished and last is not None and time.monotonic() - last > STALL_SECONDS:
            return Text("stalled", style="progress.data.speed")
        return super().render(task)


class _StallAwareRemaining(TimeRemainingColumn):
    def render(self, task):  # type: ignore[no-untyped-def]
        last = task.fields.get("last_byte")
        if not task.finished and last is not None and time.monotonic() - last > STALL_SECONDS:
            return Text("-:--:--", style="progress.remaining")
        return super().render(task)


class LogProgress:
    """The part of rich's ``Progress`` the downloader uses, as a plain line every ``interval`` seconds (and at
    the end) for a log file."""

    def __init__(self, interval: float) -> None:
        self.console = Console(stderr=True, soft_wrap=True, highlight=False)
        self.interval = interval
        self.tasks: dict[int, dict] = {}

    def add_task(self, description: str, total: float | None = None, **_: object) -> int:
        now = time.monotonic()
        self.tasks[len(self.tasks)] = {"label": description, "total": total, "done": 0, "start": now,
                                       "start_done": 0, "printed": now}  # fmt: skip
        return len(self.tasks) - 1

    def update(self, task: int, *, total: float | None = None, completed: float | None = None,
               advance: float | None = None, **_: object) -> None:  # fmt: skip
        t = self.tasks[task]
        if total is not None:
            t["total"] = total
        if completed is not None:
            t["done"] = t["start_done"] = completed
            t["start"] = time.monotonic()
        if advance:
            t["done"] += advance
        now = time.monotonic()
        finished = t["total"] is not None and t["done"] >= t["total"]
        if now - t["printed"] >= self.interval or (finished and not t.get("reported")):
            t["printed"] = now
            t["reported"] = finished
            self.console.print(self.line(task), markup=False)

    def line(self, task: int) -> str:
        t = self.tasks[task]
        rate = (t["done"] - t["start_done"]) / max(time.monotonic() - t["start"], 1e-9)
        of = f" of {t['total'] / 1e6:,.1f} MB ({100 * t['done'] / t['total']:.0f}%)" if t["total"] else ""
        return f"{t['label']}: {t['done'] / 1e6:,.1f} MB{of} at {rate / 1e6:,.2f} MB/s"


@contextmanager
def progress_bar(enabled: bool, interval: float = 30.0) -> Iterator[Progress | LogProgress | None]:
    """A rich progress display (bytes, rate, ETA) on stderr in a terminal, plain lines every ``interval``
    seconds when stderr is a file, or ``None`` when disabled."""
    if not enabled:
        yield None
        return
    console = Console(stderr=True)
    if not console.is_terminal:
        yield LogProgress(interval)
        return
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        _StallAwareSpeed(),
        _StallAwareRemaining(),
        console=console,
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
    resume_key: str | None = None,
) -> Path:
    """Download the first working URL of ``urls`` into ``<dest>.partial`` and return that partial path.

    Resumes an existing partial file left by a download with the same ``resume_key`` (default: the URL).
    Raises :class:`DownloadError` naming every URL's failure.
    """
    policy = policy or DownloadPolicy.from_env()
    dest.parent.mkdir(parents=True, exist_ok=True)
    errors: list[str] = []
    own_session = session is None
    session = session or requests.Session()
    try:
        with progress_bar(progress, policy.progress_interval) as bar:
            for url in urls:
                try:
                    _download_one(url, dest, expected_size, policy, bar, label or dest.name, session,
                                  resume_key or url)  # fmt: skip
                    return partial_path(dest)
                except (IntegrityError, DiskFullError):
                    raise
                except DownloadError as exc:
                    errors.append(str(exc))
    finally:
        if own_session:
            session.close()
    raise DownloadError("download failed:\n  " + "\n  ".join(errors))


def report_event(bar: Progress | LogProgress | None, message: str) -> None:
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
    home = "HF_HUB_CACHE" if "blobs" in path.parts else "MIXFLOW_BENCH_HOME"  # Hugging Face files: their cache
    return DiskFullError(
        f"no space left on the device holding {path.parent}: {need}{free:,} bytes are free; free some space "
        f"(or point {home} at a larger file system) and run the command again to resume"
    )


def _download_one(
    url: str,
    dest: Path,
    expected_size: int | None,
    policy: DownloadPolicy,
    bar: Progress | LogProgress | None,
    label: str,
    session: requests.Session,
    key: str,
) -> None:
    partial, meta_file = partial_path(dest), _meta_path(dest)
    meta: dict[str, str] = {}
    if partial.exists() and meta_file.exists():
        try:
            meta = json.loads(meta_file.read_text())
        except (OSError, json.JSONDecodeError):
            meta = {}
        if meta.get("key", meta.get("url")) != key:  # a prefix of something else: cannot be continued
            partial.unlink()
            meta = {}
    meta["key"] = key
    task = bar.add_task(label, total=expected_size) if bar is not None else None
    failures = 0
    attempts = 0
    furthest = partial.stat().st_size if partial.exists() else 0  # progress means passing this
    while True:
        attempts += 1
        offset = partial.stat().st_size if partial.exists() else 0
        wait: float | None = None
        counts = True
        try:
            _attempt(url, partial, meta_file, meta, offset, expected_size, policy, bar, task, session)
            return
        except _Retryable as exc:
            reason, wait, counts = str(exc), exc.wait, exc.progress
        except requests.Timeout as exc:
            reason = f"timed out (no data for {policy.read_timeout:g} s or no connection in "
            reason += f"{policy.connect_timeout:g} s): {exc.__class__.__name__}"
        except requests.RequestException as exc:
            reason = f"{exc.__class__.__name__}: {exc}"
        size = partial.stat().st_size if partial.exists() else 0
        progressed = counts and size > furthest  # bytes thrown away by a restart from 0 are not progress
        furthest = max(furthest, size)
        failures = 0 if progressed else failures + 1
        if failures > policy.retries:
            raise DownloadError(
                f"{url}: gave up after {attempts} attempts ({policy.retries} retries without progress); "
                f"last error: {reason}"
            )
        delay, why = retry_delay(policy, max(failures, 1), wait)
        report_event(bar, f"{label}: {reason}; retry {max(failures, 1)}/{policy.retries} in {delay:.3g} s{why}")
        time.sleep(delay)


def retry_delay(policy: DownloadPolicy, failures: int, wait: float | None) -> tuple[float, str]:
    """The wait before the next attempt and, for a server's Retry-After, a note saying so (and any cap)."""
    if wait is None:
        return policy.delay(failures), ""
    if wait > policy.backoff_max:
        return policy.backoff_max, (f" (the server's Retry-After is {wait:g} s, capped at {policy.backoff_max:g} s: "
                                    f"MIXFLOW_BENCH_DOWNLOAD_BACKOFF_MAX)")  # fmt: skip
    return wait, " (the server's Retry-After)"


def _attempt(
    url: str,
    partial: Path,
    meta_file: Path,
    meta: dict[str, str],
    offset: int,
    expected_size: int | None,
    policy: DownloadPolicy,
    bar: Progress | LogProgress | None,
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
        validators = {"key": meta.get("key", url), "url": url, "etag": resp.headers.get("ETag", ""),
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
                        bar.update(task, advance=len(chunk), last_byte=time.monotonic())  # type: ignore[arg-type]
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
