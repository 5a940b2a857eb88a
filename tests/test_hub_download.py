"""Downloader fault tests against a real HTTP server on 127.0.0.1 (mixflow_bench.hub.testserver)."""

from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path

import pytest

from mixflow_bench.hub import DownloadError, IntegrityError, OfflineError, fetch, status
from mixflow_bench.hub.testserver import FaultyServer, ServedFile

pytestmark = pytest.mark.timeout(60)

RETRIES = 2


def payload(n: int, seed: int = 0) -> bytes:
    """Deterministic, non-repeating bytes (so an off-by-one resume changes the hash)."""
    out, block = bytearray(), hashlib.sha256(str(seed).encode()).digest()
    while len(out) < n:
        block = hashlib.sha256(block).digest()
        out += block
    return bytes(out[:n])


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "home"
    monkeypatch.setenv("MIXFLOW_BENCH_HOME", str(root))
    monkeypatch.setenv("MIXFLOW_BENCH_DOWNLOAD_RETRIES", str(RETRIES))
    monkeypatch.setenv("MIXFLOW_BENCH_DOWNLOAD_BACKOFF", "0.01")
    monkeypatch.setenv("MIXFLOW_BENCH_DOWNLOAD_READ_TIMEOUT", "0.4")
    monkeypatch.setenv("MIXFLOW_BENCH_DOWNLOAD_CONNECT_TIMEOUT", "2")
    return root


@pytest.fixture
def server():
    with FaultyServer() as srv:
        yield srv


def register(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, entries: dict[str, dict]) -> None:
    """Point registry entries at the local server through the overrides file (seen by subprocesses too)."""
    path = tmp_path / "overrides.json"
    path.write_text(json.dumps(entries))
    monkeypatch.setenv("MIXFLOW_BENCH_REGISTRY_OVERRIDES", str(path))


def serve(server, monkeypatch, tmp_path, data: bytes, *, sha: bool = True, size: bool = False, **faults):
    server.files["/ckpt.pt"] = ServedFile(data, **faults)
    entry = {"urls": [server.url("/ckpt.pt")], "sha256": hashlib.sha256(data).hexdigest() if sha else None,
             "check": "none"}  # fmt: skip
    if size:
        entry["size"] = len(data)
    register(monkeypatch, tmp_path, {"sit-xl-2-256": entry})


def test_full_download_checks_hash_and_caches(home, server, monkeypatch, tmp_path):
    data = payload(700_000)
    serve(server, monkeypatch, tmp_path, data, size=True)
    assert status("sit-xl-2-256").state == "missing"
    path = fetch("sit-xl-2-256", progress=False)
    assert path == home / "artifacts" / "sit-xl-2-256" / "SiT-XL-2-256x256.pt"
    assert path.read_bytes() == data
    assert not path.with_name(path.name + ".partial").exists()
    st = status("sit-xl-2-256")
    assert (st.state, st.size) == ("verified", len(data))
    # a second fetch is served from the cache: no new request
    assert fetch("sit-xl-2-256", progress=False) == path
    assert len(server.requests_for("/ckpt.pt")) == 1


def test_resume_after_dropped_connection_sends_range(home, server, monkeypatch, tmp_path):
    data = payload(1_000_003)
    serve(server, monkeypatch, tmp_path, data, drop_after=300_000, etag='"v1"')
    path = fetch("sit-xl-2-256", progress=False)
    assert path.read_bytes() == data
    gets = server.requests_for("/ckpt.pt")
    assert len(gets) == 2
    assert "Range" not in gets[0].headers
    assert gets[1].headers["Range"] == "bytes=300000-"
    assert gets[1].headers["If-Range"] == '"v1"'
    assert gets[1].status == 206
    assert gets[0].body_bytes + gets[1].body_bytes == len(data)


def test_server_ignoring_range_restarts_cleanly(home, server, monkeypatch, tmp_path):
    data = payload(800_000, seed=1)
    serve(server, monkeypatch, tmp_path, data, drop_after=250_000, ignore_range=True)
    path = fetch("sit-xl-2-256", progress=False)
    assert path.read_bytes() == data
    gets = server.requests_for("/ckpt.pt")
    assert gets[1].headers["Range"] == "bytes=250000-" and gets[1].status == 200
    assert gets[1].body_bytes == len(data)


def test_changed_remote_file_is_not_spliced(home, server, monkeypatch, tmp_path):
    """A partial file left from an older remote version: If-Range makes the server send the new file whole."""
    old, new = payload(600_000, seed=2), payload(600_000, seed=3)
    serve(server, monkeypatch, tmp_path, new, sha=False, etag='"new"')
    folder = home / "artifacts" / "sit-xl-2-256"
    folder.mkdir(parents=True)
    (folder / "SiT-XL-2-256x256.pt.partial").write_bytes(old[:200_000])
    meta = {"url": server.url("/ckpt.pt"), "etag": '"old"', "last_modified": ""}
    (folder / "SiT-XL-2-256x256.pt.partial.json").write_text(json.dumps(meta))
    path = fetch("sit-xl-2-256", progress=False)
    assert path.read_bytes() == new
    (get,) = server.requests_for("/ckpt.pt")
    assert (get.headers["Range"], get.headers["If-Range"], get.status) == ("bytes=200000-", '"old"', 200)


def test_progress_resets_the_retry_budget(home, server, monkeypatch, tmp_path):
    data = payload(900_000, seed=4)
    serve(server, monkeypatch, tmp_path, data, drop_after=100_000, drop_times=RETRIES + 3)
    assert fetch("sit-xl-2-256", progress=False).read_bytes() == data
    assert len(server.requests_for("/ckpt.pt")) == RETRIES + 4


def test_corrupted_bytes_fail_hash_and_leave_nothing(home, server, monkeypatch, tmp_path):
    data = payload(400_000, seed=5)
    serve(server, monkeypatch, tmp_path, data)
    bad = bytearray(data)
    bad[123_456] ^= 0xFF
    server.files["/ckpt.pt"].data = bytes(bad)
    with pytest.raises(IntegrityError, match="sha256"):
        fetch("sit-xl-2-256", progress=False)
    folder = home / "artifacts" / "sit-xl-2-256"
    assert not (folder / "SiT-XL-2-256x256.pt").exists()
    assert not (folder / "SiT-XL-2-256x256.pt.partial").exists()


def test_wrong_size_refused_before_download(home, server, monkeypatch, tmp_path):
    data = payload(300_000, seed=6)
    server.files["/ckpt.pt"] = ServedFile(data)
    register(monkeypatch, tmp_path, {"sit-xl-2-256": {"urls": [server.url("/ckpt.pt")], "size": 299_999}})
    with pytest.raises(IntegrityError, match="299999"):
        fetch("sit-xl-2-256", progress=False)


@pytest.mark.parametrize("code, attempts", [(404, 1), (500, RETRIES + 1)])
def test_http_errors_are_clear(home, server, monkeypatch, tmp_path, code, attempts):
    serve(server, monkeypatch, tmp_path, b"x", status=code)
    with pytest.raises(DownloadError, match=f"HTTP {code}"):
        fetch("sit-xl-2-256", progress=False)
    assert len(server.requests_for("/ckpt.pt")) == attempts
    assert not (home / "artifacts" / "sit-xl-2-256" / "SiT-XL-2-256x256.pt").exists()


def test_second_mirror_used_when_first_fails(home, server, monkeypatch, tmp_path):
    data = payload(50_000, seed=7)
    server.files["/good.pt"] = ServedFile(data)
    urls = [server.url("/missing.pt"), server.url("/good.pt")]
    sha = hashlib.sha256(data).hexdigest()
    register(monkeypatch, tmp_path, {"sit-xl-2-256": {"urls": urls, "sha256": sha, "check": "none"}})
    assert fetch("sit-xl-2-256", progress=False).read_bytes() == data


def test_stalled_server_errors_after_retries(home, server, monkeypatch, tmp_path):
    serve(server, monkeypatch, tmp_path, payload(100_000), stall_after=0)
    start = time.monotonic()
    with pytest.raises(DownloadError, match="stalled") as info:
        fetch("sit-xl-2-256", progress=False)
    elapsed = time.monotonic() - start
    assert f"{RETRIES + 1} attempts" in str(info.value)
    assert len(server.requests_for("/ckpt.pt")) == RETRIES + 1
    assert elapsed < (RETRIES + 1) * 0.4 + 3


def test_hash_lock_recorded_then_tampering_refused(home, server, monkeypatch, tmp_path):
    data = payload(200_000, seed=8)
    serve(server, monkeypatch, tmp_path, data, sha=False)
    path = fetch("sit-xl-2-256", progress=False)
    lock = json.loads((home / "hashes.lock.json").read_text())
    assert lock["sit-xl-2-256"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert lock["sit-xl-2-256"]["size"] == len(data)
    # same size, one byte changed
    tampered = bytearray(data)
    tampered[10] ^= 1
    path.write_bytes(bytes(tampered))
    assert status("sit-xl-2-256").state == "present"
    with pytest.raises(IntegrityError, match="hash lock"):
        fetch("sit-xl-2-256", progress=False)
    # --force downloads again and the good file passes the recorded hash; a first-download record is no
    # independent check, so the file is "unverified", never "verified"
    assert fetch("sit-xl-2-256", progress=False, force=True).read_bytes() == data
    assert status("sit-xl-2-256").state == "unverified"


def test_offline_names_missing_artifact_and_command(home, server, monkeypatch, tmp_path):
    serve(server, monkeypatch, tmp_path, payload(1000))
    with pytest.raises(OfflineError, match="mixflow-bench download sit-xl-2-256"):
        fetch("sit-xl-2-256", offline=True, progress=False)
    assert server.requests == []
    fetch("sit-xl-2-256", progress=False)
    assert fetch("sit-xl-2-256", offline=True, progress=False).exists()


def test_progress_bar_renders_bytes(home, server, monkeypatch, tmp_path):
    import io

    from rich.console import Console

    import mixflow_bench.hub.http as http

    data = payload(300_000, seed=9)
    serve(server, monkeypatch, tmp_path, data)
    out = io.StringIO()
    monkeypatch.setattr(http, "Console", lambda **kw: Console(file=out, force_terminal=True, width=120))
    fetch("sit-xl-2-256", progress=True)
    assert "sit-xl-2-256" in out.getvalue() and "kB" in out.getvalue()


def test_server_ignoring_range_and_dropping_every_response_gives_up(home, server, monkeypatch, tmp_path):
    """Every restart from byte 0 re-sends the bytes already held: no progress, so the retries run out."""
    serve(server, monkeypatch, tmp_path, payload(600_000, seed=10), drop_after=100_000, drop_times=1000,
          ignore_range=True)  # fmt: skip
    with pytest.raises(DownloadError, match="retries without progress"):
        fetch("sit-xl-2-256", progress=False)
    assert len(server.requests_for("/ckpt.pt")) == RETRIES + 2  # the first attempt moved bytes; then RETRIES + 1


def test_partial_file_is_resumed_by_key_whatever_the_url(home, server, tmp_path):
    """A partial file keyed by the artifact and hash is continued from another URL (a signed CDN URL changes on
    every request); keyed by the URL alone (no key) it would restart."""
    from mixflow_bench.hub.http import DownloadPolicy, download

    data = payload(500_000, seed=11)
    server.files["/a"] = ServedFile(data, drop_after=200_000, drop_times=99, ignore_range=True, etag='"e"')
    server.files["/b"] = ServedFile(data, etag='"e"')
    dest = tmp_path / "blob"
    policy = DownloadPolicy(retries=0, backoff=0.01)
    with pytest.raises(DownloadError):
        download([server.url("/a")], dest, policy=policy, progress=False, resume_key="art:file:sha")
    assert (tmp_path / "blob.partial").stat().st_size == 200_000
    part = download([server.url("/b")], dest, policy=policy, progress=False, resume_key="art:file:sha")
    assert part.read_bytes() == data
    (get,) = server.requests_for("/b")
    assert get.headers["Range"] == "bytes=200000-" and get.status == 206


def test_retry_after_beyond_the_cap_is_reported_as_capped(home, server, monkeypatch, tmp_path, capfd):
    monkeypatch.setenv("MIXFLOW_BENCH_DOWNLOAD_BACKOFF_MAX", "0.05")
    data = payload(10_000, seed=12)
    serve(server, monkeypatch, tmp_path, data, status=503, status_times=1, headers={"Retry-After": "3600"})
    assert fetch("sit-xl-2-256", progress=False).read_bytes() == data
    err = " ".join(capfd.readouterr().err.split())
    assert "in 0.05 s (the server's Retry-After is 3600 s, capped at 0.05 s" in err


def test_marker_holds_through_a_symlink_and_verify_finds_silent_corruption(home, server, monkeypatch, tmp_path):
    import os

    from click.testing import CliRunner

    from mixflow_bench.cli.download_cmd import command

    data = payload(300_000, seed=13)
    serve(server, monkeypatch, tmp_path, data)
    path = fetch("sit-xl-2-256", progress=False)
    link = tmp_path / "home-link"
    link.symlink_to(home)
    monkeypatch.setenv("MIXFLOW_BENCH_HOME", str(link))  # the same cache through another path
    hashed = []
    fetch_module = sys.modules["mixflow_bench.hub.fetch"]  # (the package exports a function of that name)
    real = fetch_module.sha256_file
    monkeypatch.setattr(fetch_module, "sha256_file", lambda p: hashed.append(p) or real(p))
    assert fetch("sit-xl-2-256", progress=False).read_bytes() == data
    assert status("sit-xl-2-256").state == "verified" and hashed == []  # the marker is trusted, no re-hash
    # corruption that keeps size and mtime: the marker cannot see it; --verify re-hashes and reports
    st = path.stat()
    bad = bytearray(data)
    bad[1000] ^= 1
    path.write_bytes(bytes(bad))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert status("sit-xl-2-256").state == "verified"
    res = CliRunner().invoke(command, ["--verify", "sit-xl-2-256"])
    assert res.exit_code == 1 and "corrupt" in res.output and "--force" in " ".join(res.output.split())
    assert status("sit-xl-2-256").state == "present"  # the marker is gone: every read checks it again
    res = CliRunner().invoke(command, ["--verify"])  # every cached artifact
    assert res.exit_code == 1 and "sit-xl-2-256" in res.output


def test_uppercase_pinned_sha256_is_normalised_and_bad_hex_refused(home, server, monkeypatch, tmp_path):
    from mixflow_bench.errors import SettingError
    from mixflow_bench.hub.registry import get_artifact

    data = payload(20_000, seed=14)
    server.files["/ckpt.pt"] = ServedFile(data)
    upper = hashlib.sha256(data).hexdigest().upper()
    register(monkeypatch, tmp_path, {"sit-xl-2-256": {"urls": [server.url("/ckpt.pt")], "sha256": upper,
                                                      "check": "none"}})  # fmt: skip
    assert get_artifact("sit-xl-2-256").sha256 == upper.lower()
    assert fetch("sit-xl-2-256", progress=False).read_bytes() == data
    assert status("sit-xl-2-256").state == "verified"
    register(monkeypatch, tmp_path, {"sit-xl-2-256": {"sha256": "z" * 64}})
    with pytest.raises(SettingError, match="not hexadecimal"):
        get_artifact("sit-xl-2-256")


def test_download_cli_messages(home, monkeypatch, tmp_path):
    from click.testing import CliRunner

    from mixflow_bench.cli.main import cli as main

    runner = CliRunner()
    res = runner.invoke(main, ["download", "--recipe", "tiny-digits"])
    assert res.exit_code == 0 and "nothing to download" in res.output  # download --recipe R && reproduce R
    monkeypatch.setenv("MIXFLOW_BENCH_REGISTRY_OVERRIDES", str(tmp_path / "missing.json"))
    res = runner.invoke(main, ["download", "sit-xl-2-256"])
    assert res.exit_code == 1 and "missing.json" in res.output and "Traceback" not in res.output
    (tmp_path / "bad.json").write_text('{"sit-xl-2-256": {"colour": 1}}')
    monkeypatch.setenv("MIXFLOW_BENCH_REGISTRY_OVERRIDES", str(tmp_path / "bad.json"))
    res = runner.invoke(main, ["download", "sit-xl-2-256"])
    assert res.exit_code == 1 and "unknown field(s) ['colour']" in res.output and len(res.output.splitlines()) == 1


def test_progress_in_a_log_file_is_a_plain_line_at_intervals(home, server, monkeypatch, tmp_path, capfd):
    monkeypatch.setenv("MIXFLOW_BENCH_DOWNLOAD_PROGRESS_INTERVAL", "0")
    data = payload(300_000, seed=9)
    serve(server, monkeypatch, tmp_path, data, chunk=50_000)
    fetch("sit-xl-2-256", progress=True)
    lines = [ln for ln in capfd.readouterr().err.splitlines() if ln.startswith("sit-xl-2-256: ")]
    assert len(lines) >= 2 and all(" MB" in ln and "MB/s" in ln for ln in lines)
    assert "0.3 MB of 0.3 MB (100%)" in lines[-1]


def test_waiting_for_another_process_is_said_without_progress(home, server, monkeypatch, tmp_path, capfd):
    import threading

    from mixflow_bench.hub.cache import lock_for

    serve(server, monkeypatch, tmp_path, payload(10_000, seed=15))
    lock = lock_for("sit-xl-2-256")
    lock.acquire()
    done = threading.Event()
    worker = threading.Thread(target=lambda: (fetch("sit-xl-2-256", progress=False), done.set()))
    worker.start()
    time.sleep(1.5)
    assert not done.is_set()
    lock.release()
    worker.join(timeout=20)
    assert done.is_set()
    assert "sit-xl-2-256: waiting for another process that is downloading it" in capfd.readouterr().err


def test_terminal_bar_shows_stalled_instead_of_a_stale_rate():
    from rich.progress import Progress

    from mixflow_bench.hub.http import STALL_SECONDS, _StallAwareRemaining, _StallAwareSpeed

    progress = Progress()
    task_id = progress.add_task("x", total=1000)
    progress.update(task_id, advance=100, last_byte=time.monotonic())
    task = progress.tasks[0]
    assert "stalled" not in str(_StallAwareSpeed().render(task))
    progress.update(task_id, last_byte=time.monotonic() - STALL_SECONDS - 1)
    assert str(_StallAwareSpeed().render(task)) == "stalled"
    assert str(_StallAwareRemaining().render(task)) == "-:--:--"


def test_disk_full_advice_names_the_cache_that_holds_the_file(tmp_path):
    from mixflow_bench.hub.http import _disk_full

    blob = tmp_path / "hf" / "models--a--b" / "blobs" / "abc"
    blob.parent.mkdir(parents=True)
    assert "HF_HUB_CACHE" in str(_disk_full(blob, 10)) and "MIXFLOW_BENCH_HOME" not in str(_disk_full(blob, 10))
    assert "MIXFLOW_BENCH_HOME" in str(_disk_full(tmp_path / "ckpt.pt", 10))
