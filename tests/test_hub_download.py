"""Downloader fault tests against a real HTTP server on 127.0.0.1 (mixflow_bench.hub.testserver)."""

from __future__ import annotations

import hashlib
import json
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


def test_progress_bar_renders_bytes(home, server, monkeypatch, tmp_path, capfd):
    data = payload(300_000, seed=9)
    serve(server, monkeypatch, tmp_path, data)
    fetch("sit-xl-2-256", progress=True)
    err = capfd.readouterr().err
    assert "sit-xl-2-256" in err and "kB" in err
