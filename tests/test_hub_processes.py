"""Downloads across processes: two concurrent downloaders, and a downloader killed mid-transfer."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mixflow_bench.hub import fetch
from mixflow_bench.hub.testserver import FaultyServer, ServedFile

pytestmark = pytest.mark.timeout(60)
REPO = Path(__file__).resolve().parents[1]
FETCH = "from mixflow_bench.hub import fetch; print(fetch('sit-xl-2-256', progress={progress}))"


def payload(n: int) -> bytes:
    return bytes((i * 7919 + i // 251) % 256 for i in range(n))


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    values = {
        "MIXFLOW_BENCH_HOME": str(tmp_path / "home"),
        "MIXFLOW_BENCH_REGISTRY_OVERRIDES": str(tmp_path / "overrides.json"),
        "MIXFLOW_BENCH_DOWNLOAD_RETRIES": "2",
        "MIXFLOW_BENCH_DOWNLOAD_BACKOFF": "0.01",
        "MIXFLOW_BENCH_DOWNLOAD_READ_TIMEOUT": "5",
        "OMP_NUM_THREADS": "1",
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    return {**os.environ, **values, "PYTHONPATH": str(REPO)}


def start_fetch(env: dict[str, str], progress: bool = False) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", FETCH.format(progress=progress)],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def point_at(server: FaultyServer, env: dict[str, str], data: bytes, sha: bool) -> None:
    entry = {"urls": [server.url("/ckpt.pt")], "sha256": hashlib.sha256(data).hexdigest() if sha else None,
             "check": "none"}  # fmt: skip
    Path(env["MIXFLOW_BENCH_REGISTRY_OVERRIDES"]).write_text(json.dumps({"sit-xl-2-256": entry}))


def test_two_processes_one_download_one_good_file(env):
    data = payload(1_500_000)
    with FaultyServer() as server:
        # throttled so that both processes are alive while the transfer runs
        server.files["/ckpt.pt"] = ServedFile(data, chunk=32 * 1024, throttle_s=0.03)
        point_at(server, env, data, sha=False)
        procs = [start_fetch(env, progress=True) for _ in range(2)]
        outs = [p.communicate(timeout=45) for p in procs]
        for proc, (_, err) in zip(procs, outs):
            assert proc.returncode == 0, err
        # the transfers overlapped: one process waited on the other's lock
        assert sum("waiting for another process that is downloading it" in err for _, err in outs) == 1
        paths = {out.strip() for out, _ in outs}
        assert len(paths) == 1
        path = Path(paths.pop())
        assert path.read_bytes() == data
        # the per-artifact lock guarantees the body is transferred exactly once
        gets = server.requests_for("/ckpt.pt")
        assert len(gets) == 1 and gets[0].body_bytes == len(data)
        lock = json.loads((Path(env["MIXFLOW_BENCH_HOME"]) / "hashes.lock.json").read_text())
        assert lock["sit-xl-2-256"]["sha256"] == hashlib.sha256(data).hexdigest()
        assert [p.name for p in path.parent.iterdir() if p.name.endswith(".partial")] == []


def test_killed_download_resumes_from_partial_file(env):
    data = payload(1_200_000)
    with FaultyServer() as server:
        server.files["/ckpt.pt"] = ServedFile(data, chunk=16 * 1024, throttle_s=0.02)
        point_at(server, env, data, sha=True)
        partial = Path(env["MIXFLOW_BENCH_HOME"]) / "artifacts/sit-xl-2-256/SiT-XL-2-256x256.pt.partial"
        proc = start_fetch(env)
        deadline = time.monotonic() + 30
        while not (partial.exists() and partial.stat().st_size >= 200_000):
            assert time.monotonic() < deadline and proc.poll() is None, "download never started"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        kept = partial.stat().st_size
        assert 200_000 <= kept < len(data)
        assert partial.read_bytes() == data[:kept]  # flushed prefix, nothing torn
        server.files["/ckpt.pt"].throttle_s = 0.0
        path = fetch("sit-xl-2-256", progress=False)
        assert path.read_bytes() == data
        last = server.requests_for("/ckpt.pt")[-1]
        assert last.headers["Range"] == f"bytes={kept}-"
        assert last.status == 206 and last.body_bytes == len(data) - kept
