"""Trust, completeness, shared caches and offline use of the artifact cache, against the local fault server."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import stat
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from mixflow_bench.cli.common import console
from mixflow_bench.cli.main import cli
from mixflow_bench.hub import DownloadError, IntegrityError, fetch, get_artifact, registry, status
from mixflow_bench.hub.testserver import FaultyServer, ServedFile

pytestmark = pytest.mark.timeout(120)
COMMIT = "0123456789abcdef0123456789abcdef01234567"
FETCH_MODULE = sys.modules["mixflow_bench.hub.fetch"]  # the package exports a function of the same name


def payload(n: int, seed: int = 0) -> bytes:
    out, block = bytearray(), hashlib.sha256(str(seed).encode()).digest()
    while len(out) < n:
        block = hashlib.sha256(block).digest()
        out += block
    return bytes(out[:n])


def torch_bytes(seed: int = 0) -> bytes:
    buf = io.BytesIO()
    torch.save({"w": torch.randn(4, 8, generator=torch.Generator().manual_seed(seed))}, buf)
    return buf.getvalue()


def safetensors_bytes(seed: int = 0) -> bytes:
    from safetensors.torch import save

    return save({"w": torch.randn(4, 8, generator=torch.Generator().manual_seed(seed))})


def npz_bytes(n: int = 8, seed: int = 0) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, arr_0=np.random.default_rng(seed).integers(0, 256, (n, 16, 16, 3), dtype=np.uint8))
    return buf.getvalue()


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private cache, quick retries, online; offline switches restored afterwards."""
    import huggingface_hub.constants

    monkeypatch.setenv("MIXFLOW_BENCH_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("MIXFLOW_BENCH_DOWNLOAD_RETRIES", "2")
    monkeypatch.setenv("MIXFLOW_BENCH_DOWNLOAD_BACKOFF", "0.01")
    monkeypatch.setenv("MIXFLOW_BENCH_DOWNLOAD_READ_TIMEOUT", "2")
    monkeypatch.setenv("MIXFLOW_BENCH_DOWNLOAD_CONNECT_TIMEOUT", "2")
    for name in ("MIXFLOW_BENCH_OFFLINE", "HF_HUB_OFFLINE"):  # set (so restored afterwards), off
        monkeypatch.setenv(name, "0")
    monkeypatch.delenv("MIXFLOW_BENCH_REGISTRY_OVERRIDES", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(console, "width", 250)
    return tmp_path


@pytest.fixture
def server(env: Path, monkeypatch: pytest.MonkeyPatch):
    with FaultyServer() as srv:
        monkeypatch.setenv("HF_ENDPOINT", srv.url(""))
        yield srv


def override(env: Path, monkeypatch: pytest.MonkeyPatch, entries: dict[str, dict]) -> None:
    path = env / "overrides.json"
    old = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps({**old, **entries}))
    monkeypatch.setenv("MIXFLOW_BENCH_REGISTRY_OVERRIDES", str(path))


def serve_direct(server, env, monkeypatch, name: str, data: bytes, extra: dict | None = None, **faults) -> None:
    server.files[f"/direct/{name}"] = ServedFile(data, **faults)
    override(env, monkeypatch, {name: {"urls": [server.url(f"/direct/{name}")], **(extra or {})}})


def serve_hf(server, name: str, data: bytes, *, published: bytes | None = None, **faults) -> None:
    """Serve an HF artifact at HF_ENDPOINT as the hub does: ETag = sha256 of ``published`` (default: data)."""
    hf = get_artifact(name).hf
    assert hf is not None
    base = f"/{hf.repo_id}/resolve/{hf.revision}"
    sha = hashlib.sha256(published if published is not None else data).hexdigest()
    headers = {"X-Repo-Commit": COMMIT}
    server.files[f"{base}/{hf.filename}"] = ServedFile(data, etag=f'"{sha}"', headers=headers, **faults)
    for companion in hf.companions:
        server.files[f"{base}/{companion}"] = ServedFile(b"{}", etag='"a1b2c3"', headers=headers)


PLAIN = "inception-torch-fidelity"  # a direct-URL artifact whose content check only loads the state dict
PLAIN_FILE = "weights-inception-2015-12-05-6726825d.pth"
NO_PREFIX = {"sha256_prefix": None}  # the stand-in files do not have the published hash prefix


def big_torch_bytes(n: int, seed: int = 0) -> bytes:
    buf = io.BytesIO()
    torch.save({"w": torch.randn(n // 4, generator=torch.Generator().manual_seed(seed))}, buf)
    return buf.getvalue()


def rows(output: str) -> dict[str, str]:
    found = {}
    for line in output.splitlines():
        cells = [c.strip() for c in re.split(r"[│┃|]", line) if c.strip()]
        if cells:
            found[cells[0]] = " ".join(cells[1:])
    return found


# 1. trust ------------------------------------------------------------------------------------------------------


def test_corrupt_hf_download_fails_the_hosts_sha256(server, env):
    good = safetensors_bytes()
    bad = bytearray(good)
    bad[-3] ^= 0x01
    serve_hf(server, "sd-vae-ft-ema", bytes(bad), published=good)
    with pytest.raises(IntegrityError, match="the hub publishes"):
        fetch("sd-vae-ft-ema", progress=False)
    assert not list((env / "hf").rglob("diffusion_pytorch_model.safetensors"))
    assert status("sd-vae-ft-ema").state == "missing"


@pytest.mark.parametrize("kind", ["html", "truncated", "wrong-shapes"])
def test_unpinned_checkpoint_is_content_checked(server, env, monkeypatch, kind):
    if kind == "html":
        data = b"<!DOCTYPE html><html><head><title>Dropbox - Error</title></head><body>" + b"x" * 61 + b"</html>"
        assert len(data) == 138
        reason = "not a PyTorch or safetensors"
    elif kind == "truncated":
        data = torch_bytes()[:-200]
        reason = "truncated"
    else:
        data = torch_bytes()  # a real state dict, but not SiT-XL/2's
        reason = "expected tensors"
    serve_direct(server, env, monkeypatch, "sit-xl-2-256", data)
    with pytest.raises(IntegrityError, match=reason):
        fetch("sit-xl-2-256", progress=False)
    assert status("sit-xl-2-256").state == "missing"
    assert not (env / "home" / "hashes.lock.json").exists() or "sit-xl-2-256" not in json.loads(
        (env / "home" / "hashes.lock.json").read_text()
    )


def test_checkpoint_missing_tensors_is_refused(server, env, monkeypatch):
    buf = io.BytesIO()
    torch.save({"pos_embed": torch.zeros(1, 256, 1152), "y_embedder.embedding_table.weight": torch.zeros(3)}, buf)
    serve_direct(server, env, monkeypatch, "sit-xl-2-256", buf.getvalue())
    with pytest.raises(IntegrityError, match=r"missing .*wrong shapes y_embedder.embedding_table.weight \(3,\)"):
        fetch("sit-xl-2-256", progress=False)


def test_list_shows_how_each_file_is_checked(server, env, monkeypatch):
    serve_direct(server, env, monkeypatch, "sit-xl-2-256", torch_bytes(), {"check": "state-dict"})
    pinned = npz_bytes()
    serve_direct(
        server, env, monkeypatch, "adm-ref-imagenet256", pinned,
        {"sha256": hashlib.sha256(pinned).hexdigest(), "sha256_source": "test pin"},
    )  # fmt: skip
    serve_hf(server, "rae-stats-256", torch_bytes())
    override(env, monkeypatch, {"rae-stats-256": {"check": "state-dict"}})
    runner = CliRunner()
    result = runner.invoke(cli, ["download", "sit-xl-2-256", "adm-ref-imagenet256", "rae-stats-256", "--no-progress"])
    assert result.exit_code == 0, result.output
    fetched = rows(result.output)
    assert fetched["sit-xl-2-256"].startswith("unverified: unverified (first download)")
    assert fetched["adm-ref-imagenet256"].startswith("verified")
    assert fetched["rae-stats-256"].startswith("verified")
    table = rows(runner.invoke(cli, ["download", "--list"]).output)
    assert "unverified" in table["sit-xl-2-256"] and "unverified (first download)" in table["sit-xl-2-256"]
    assert " verified " in table["adm-ref-imagenet256"] and "pinned sha256 (test pin)" in table["adm-ref-imagenet256"]
    assert " verified " in table["rae-stats-256"] and "host sha256" in table["rae-stats-256"]
    assert "host sha256" in table["rae-dith-xl-256"] and "missing" in table["rae-dith-xl-256"]
    assert "pinned sha256 prefix" in table["inception-torch-fidelity"]


# 2. repair -----------------------------------------------------------------------------------------------------


def test_force_repairs_a_bad_record_and_says_what_it_replaced(server, env, monkeypatch):
    good, bad = torch_bytes(1), torch_bytes(2)
    serve_direct(server, env, monkeypatch, PLAIN, good, NO_PREFIX)
    folder = env / "home" / "artifacts" / PLAIN
    folder.mkdir(parents=True)
    (folder / PLAIN_FILE).write_bytes(bad)  # a bad first download, recorded as if it were good
    bad_sha = hashlib.sha256(bad).hexdigest()
    lock = {PLAIN: {"sha256": bad_sha, "size": len(bad), "source": "x", "recorded": "2026-01-01"}}
    (env / "home" / "hashes.lock.json").write_text(json.dumps(lock))
    result = CliRunner().invoke(cli, ["download", PLAIN, "--force", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert (folder / PLAIN_FILE).read_bytes() == good
    recorded = json.loads((env / "home" / "hashes.lock.json").read_text())[PLAIN]
    assert recorded["sha256"] == hashlib.sha256(good).hexdigest()
    text = " ".join(result.output.split())
    assert f"replaced the hash lock record sha256 {bad_sha}" in text
    assert "replaced the cached file" in text
    # without --force the repaired file is accepted as it is
    assert CliRunner().invoke(cli, ["download", PLAIN, "--no-progress"]).exit_code == 0


# 3. complete recipe bundles, offline reproduce --------------------------------------------------------------------


def full_recipes() -> list[str]:
    from mixflow_bench.recipes import list_recipes, load_recipe
    from mixflow_bench.sampling.models import TOY_MODELS

    out = []
    for name in list_recipes():
        recipe = load_recipe(name)
        studies = (recipe.study, recipe.mixed_source, recipe.image_study)  # small studies have no downloads
        if all(x is None for x in studies) and recipe.model.name not in TOY_MODELS:
            out.append(name)
    return out


@pytest.fixture(scope="module")
def inception_file(tmp_path_factory) -> bytes:
    """torch-fidelity's Inception layout with random weights (the evaluator loads it like the real file)."""
    from mixflow_bench.metrics.inception import random_state_dict

    buf = io.BytesIO()
    torch.save(random_state_dict(), buf)
    return buf.getvalue()


def cifar_archive_bytes(tmp: Path) -> bytes:
    """A CIFAR-10 python archive in the official layout (3 images per batch)."""
    from test_mixed_source_reference import write_archive  # pytest puts tests/ on sys.path

    path = tmp / "cifar-10-python.tar.gz"
    write_archive(path)
    return path.read_bytes()


def serve_everything(server, env, monkeypatch, inception: bytes) -> None:
    entries: dict[str, dict] = {}
    for name, art in registry().items():
        if art.hf is not None:
            data = safetensors_bytes() if art.filename.endswith(".safetensors") else torch_bytes()
            serve_hf(server, name, data)
            entries[name] = {"check": "state-dict"}
            continue
        if art.kind == "reference-batch":
            data, extra = npz_bytes(), {}
        elif art.kind == "dataset":  # a small archive in the real layout, under its own hash
            data = cifar_archive_bytes(env)
            extra = {"sha256": hashlib.sha256(data).hexdigest()}
        elif name == "inception-torch-fidelity":
            data, extra = inception, {"sha256_prefix": None}
        else:
            data, extra = torch_bytes(), {"check": "state-dict"}
        server.files[f"/direct/{name}"] = ServedFile(data)
        entries[name] = {"urls": [server.url(f"/direct/{name}")], **extra}
    override(env, monkeypatch, entries)


def download_bundles_then_go_offline(server, env, monkeypatch, inception: bytes) -> CliRunner:
    """`download --recipe R` for every full recipe on the 'login node', then the network off."""
    serve_everything(server, env, monkeypatch, inception)
    runner = CliRunner()
    for name in full_recipes():
        result = runner.invoke(cli, ["download", "--recipe", name, "--no-progress"])
        assert result.exit_code == 0, (name, result.output)
    server.files.clear()  # the compute node: nothing to reach, and the switch is on
    monkeypatch.setenv("MIXFLOW_BENCH_OFFLINE", "1")
    return runner


def test_recipe_bundles_are_complete_and_reproduce_runs_offline(server, env, monkeypatch, inception_file):
    from mixflow_bench.metrics.inception import load_inception
    from mixflow_bench.recipes import load_recipe
    from mixflow_bench.recipes.artifacts import artifacts_for_recipe

    recipes = full_recipes()
    assert {"sit-xl-256", "repa-256", "rae-256", "rae-512-cfg"} <= set(recipes)
    expected = {
        "sit-xl-256": {"sit-xl-2-256", "sd-vae-ft-ema", "adm-ref-imagenet256", "inception-torch-fidelity"},
        "repa-256": {"repa-sit-xl-2-256", "sd-vae-ft-ema", "sd-vae-ft-mse", "adm-ref-imagenet256"},
        "rae-256-cfg": {"rae-dith-xl-256", "rae-dith-s-256", "rae-decoder-256", "rae-stats-256", "dinov2-reg-b"},
        "rae-512": {"rae-dith-xl-512", "rae-decoder-512", "rae-stats-512", "dinov2-reg-b", "adm-ref-imagenet512"},
    }
    for name, must in expected.items():
        assert must <= set(artifacts_for_recipe(load_recipe(name))), name
    runner = download_bundles_then_go_offline(server, env, monkeypatch, inception_file)
    # the download stage builds the CIFAR-10 reference from the archive; the folder-based references (FFHQ,
    # AFHQv2) are the user's `data prepare --reference --source FOLDER`, done here as files in their place
    monkeypatch.chdir(env)
    for name in recipes:
        evaluation = load_recipe(name).eval
        if evaluation is not None and evaluation.reference_data is not None:
            if evaluation.reference_data.dataset != "cifar10":
                Path(evaluation.reference).parent.mkdir(parents=True, exist_ok=True)
                Path(evaluation.reference).write_bytes(npz_bytes())
    before = len(server.requests)
    for name in recipes:
        run_dir = env / "runs" / name
        result = runner.invoke(cli, ["reproduce", name, "--stage", "download", "--run-dir", str(run_dir)])
        assert result.exit_code == 0, (name, result.output)
    cifar = np.load(env / "runs" / "data" / "cifar10-train-32.npz")["arr_0"]  # built from the cached archive
    assert cifar.shape == (15, 32, 32, 3) and cifar.dtype == np.uint8
    # the evaluator's network comes from the cache too (torch-fidelity's own download would need the network)
    net = load_inception(device="cpu")
    assert net.weights_id == "torch-fidelity-6726825d"
    assert len(server.requests) == before


@pytest.mark.slow
def test_offline_reproduce_evaluates_from_the_cache(server, env, monkeypatch, inception_file):
    runner = download_bundles_then_go_offline(server, env, monkeypatch, inception_file)
    before = len(server.requests)
    run_dir = env / "runs" / "sit-xl-256"
    (run_dir / "samples").mkdir(parents=True)
    for variant, seed in (("baseline", 1), ("mixflow", 2)):
        (run_dir / "samples" / f"{variant}.npz").write_bytes(npz_bytes(n=2, seed=seed))  # Inception is slow on CPU
    # the Inception score: the evaluator's network and the reference batch from the cache, without the slow
    # 2048x2048 matrix square root of FID on a CPU
    args = ["--offline", "reproduce", "sit-xl-256", "eval.metrics=[is]", "--stage", "eval", "--run-dir", str(run_dir)]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    score = json.loads((run_dir / "eval" / "baseline.json").read_text())["is"]
    assert np.isfinite(score) and score >= 1
    assert os.environ["HF_HUB_OFFLINE"] == "1"  # --offline turns Hugging Face's own switch on too
    assert len(server.requests) == before


# 4. shared and read-only caches ----------------------------------------------------------------------------------


def test_shared_cache_respects_umask_and_works_read_only(server, env, monkeypatch):
    from mixflow_bench.atomic import atomic_write_text

    serve_direct(server, env, monkeypatch, PLAIN, torch_bytes(), NO_PREFIX)
    serve_hf(server, "dinov2-reg-b", safetensors_bytes(3))
    old = os.umask(0o002)
    try:
        path = fetch(PLAIN, progress=False)
        hf_path = fetch("dinov2-reg-b", progress=False)
        written = atomic_write_text(env / "data-cache" / "index.json", "{}")
    finally:
        os.umask(old)
    home = env / "home"
    files = [path, home / "hashes.lock.json", home / f"artifacts/{PLAIN}/verified.json",
             home / f"locks/{PLAIN}.lock", Path(os.path.realpath(hf_path)), written]  # fmt: skip
    for f in files:
        assert stat.S_IMODE(f.stat().st_mode) == 0o664, f
    assert stat.S_IMODE((home / "artifacts").stat().st_mode) == 0o775

    # a cache without write access: no lock, no marker, no record may be written, and nothing is needed
    (home / f"artifacts/{PLAIN}/verified.json").unlink()  # e.g. filled by another user's older version

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied (read-only cache)")

    monkeypatch.setattr(FETCH_MODULE, "lock_for", refuse)
    monkeypatch.setattr(FETCH_MODULE, "atomic_write_text", refuse)
    monkeypatch.setattr("mixflow_bench.hub.cache.atomic_write_text", refuse)
    for root, dirs, names in os.walk(home):
        for n in dirs + names:
            os.chmod(os.path.join(root, n), 0o555 if n in dirs else 0o444)
    try:
        assert fetch(PLAIN, progress=False, offline=True) == path
        assert fetch("dinov2-reg-b", progress=False, offline=True) == hf_path
        assert status(PLAIN).state == "present"  # checked, but the marker could not be kept
    finally:
        for root, dirs, _ in os.walk(home):
            for n in dirs:
                os.chmod(os.path.join(root, n), 0o755)


# 5. no network on a first run ------------------------------------------------------------------------------------


@pytest.mark.parametrize("offline", [False, True])
def test_sample_without_network_names_artifact_url_path_and_command(server, env, monkeypatch, offline):
    dead = server.url("/gone/SiT-XL-2-256.pt")
    override(env, monkeypatch, {"sit-xl-2-256": {"urls": [dead]}})
    server.files["/gone/SiT-XL-2-256.pt"] = ServedFile(b"", status=503)
    args = (["--offline"] if offline else []) + ["sample", "--model", "sit-xl-2", "--num", "1", "--out",
                                                 str(env / "s.npz")]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception  # a clean error, not a traceback
    text = " ".join(result.output.split())
    assert "sit-xl-2-256" in text and dead in text
    assert str(env / "home" / "artifacts" / "sit-xl-2-256" / "SiT-XL-2-256x256.pt") in text
    assert "mixflow-bench download sit-xl-2-256" in text
    assert ("offline mode is on" in text) == offline
    if offline:
        assert server.requests == []


# 6. Hugging Face downloads resume and retry ------------------------------------------------------------------------


def test_hf_download_resumes_after_a_reset(server, env, monkeypatch):
    from safetensors.torch import save

    data = save({"w": torch.randn(225_000, generator=torch.Generator().manual_seed(0))})
    serve_hf(server, "dinov2-reg-b", data, drop_after=300_000, drop_times=2)
    hf = get_artifact("dinov2-reg-b").hf
    path = fetch("dinov2-reg-b", progress=False)
    assert path.read_bytes() == data
    gets = server.requests_for(f"/{hf.repo_id}/resolve/{hf.revision}/{hf.filename}")
    assert [g.headers.get("Range") for g in gets] == [None, "bytes=300000-", "bytes=600000-"]
    assert [g.status for g in gets] == [200, 206, 206]
    assert sum(g.body_bytes for g in gets) == len(data)
    assert status("dinov2-reg-b").state == "verified"


# 7. robustness details ---------------------------------------------------------------------------------------------


def test_retry_after_is_honoured(server, env, monkeypatch, capfd):
    serve_direct(server, env, monkeypatch, PLAIN, torch_bytes(), NO_PREFIX, status=503, status_times=1,
                 headers={"Retry-After": "1"})  # fmt: skip
    fetch(PLAIN, progress=False)
    first, second = server.requests_for(f"/direct/{PLAIN}")
    assert (first.status, second.status) == (503, 200)
    assert second.time - first.time >= 0.9  # the backoff alone would wait 0.01 s
    err = capfd.readouterr().err
    assert err.count("retry 1/2") == 1 and "Retry-After" in err


def test_trickling_server_is_a_stall(server, env, monkeypatch):
    monkeypatch.setenv("MIXFLOW_BENCH_DOWNLOAD_LOW_SPEED_LIMIT", "2000")
    monkeypatch.setenv("MIXFLOW_BENCH_DOWNLOAD_LOW_SPEED_TIME", "0.3")
    data = torch_bytes()  # ~1.5 kB at 50 B/s: half a minute for the file, never silent for 2 s
    serve_direct(server, env, monkeypatch, PLAIN, data, NO_PREFIX, chunk=1, throttle_s=0.02)
    start = time.monotonic()
    with pytest.raises(DownloadError, match="too slow"):
        fetch(PLAIN, progress=False)
    assert time.monotonic() - start < 6
    assert len(server.requests_for(f"/direct/{PLAIN}")) == 3  # first attempt + 2 retries


def test_full_disk_is_reported_at_once(server, env, monkeypatch):
    import shutil

    data = big_torch_bytes(100_000)
    serve_direct(server, env, monkeypatch, PLAIN, data, NO_PREFIX)
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=5_000))
    needed = rf"no space left.*{len(data):,} more bytes are needed, 5,000 bytes are free"
    with pytest.raises(DownloadError, match=needed):
        fetch(PLAIN, progress=False)
    assert len(server.requests_for(f"/direct/{PLAIN}")) == 1


def test_write_error_enospc_is_not_retried(server, env, monkeypatch):
    import errno

    from mixflow_bench.hub import http

    data = big_torch_bytes(100_000)
    serve_direct(server, env, monkeypatch, PLAIN, data, NO_PREFIX, chunk=10_000)
    # The disk fills once 20 kB have arrived. Counted in bytes, not in blocks: a block is whatever the socket
    # holds when it is read (one block may be the whole file on a busy machine), so "the 3rd block" may never come.
    monkeypatch.setenv("MIXFLOW_BENCH_DOWNLOAD_CHUNK_SIZE", "10000")
    real_chunks = http._chunks
    received = 0

    def chunks_then_full(resp, size):
        nonlocal received
        for block in real_chunks(resp, size):
            received += len(block)
            if received >= 20_000:
                raise OSError(errno.ENOSPC, "No space left on device")
            yield block

    monkeypatch.setattr(http, "_chunks", chunks_then_full)
    with pytest.raises(DownloadError, match="no space left") as caught:
        fetch(PLAIN, progress=False)
    assert "retry" not in str(caught.value)
    assert len(server.requests_for(f"/direct/{PLAIN}")) == 1
    assert 0 < received < len(data)  # it failed in the middle of the file, not after it


def test_retries_are_one_line_each_in_logs(server, env, monkeypatch, capfd):
    serve_direct(server, env, monkeypatch, PLAIN, big_torch_bytes(400_000), NO_PREFIX, drop_after=100_000,
                 drop_times=2)  # fmt: skip
    fetch(PLAIN, progress=False)
    lines = [line for line in capfd.readouterr().err.splitlines() if "retry" in line]
    assert len(lines) == 2
    assert all(line.startswith(f"{PLAIN}: connection") for line in lines)


def test_cached_file_is_read_without_rehash_or_lock(server, env, monkeypatch):
    serve_direct(server, env, monkeypatch, PLAIN, torch_bytes(), NO_PREFIX)
    path = fetch(PLAIN, progress=False)

    def forbidden(*args, **kwargs):
        raise AssertionError("a reader of an unchanged, checked file must not hash it or take the lock")

    monkeypatch.setattr(FETCH_MODULE, "sha256_file", forbidden)
    monkeypatch.setattr(FETCH_MODULE, "lock_for", forbidden)
    assert fetch(PLAIN, progress=False) == path
    os.utime(path, ns=(0, path.stat().st_mtime_ns + 1))  # a changed mtime: the marker no longer applies
    with pytest.raises(AssertionError, match="must not hash"):
        fetch(PLAIN, progress=False)


# 8. registry hygiene ---------------------------------------------------------------------------------------


def test_every_registry_entry_is_used_and_rae_revision_is_pinned():
    from mixflow_bench.hub.registry import FD_DINOV2_ARTIFACT
    from mixflow_bench.recipes import load_recipe
    from mixflow_bench.recipes.artifacts import artifacts_for_recipe

    names = set(registry())
    used = {FD_DINOV2_ARTIFACT}  # eval --fd-dinov2 dinov2-vit-l
    for recipe in full_recipes():
        used |= set(artifacts_for_recipe(load_recipe(recipe)))
    assert names == used
    assert get_artifact("rae-dith-xl-256").hf.revision == "1be4f03273523431f099a934da4cf1940dc6039f"


def test_every_artifact_a_zoo_entry_or_recipe_names_is_in_the_registry():
    """A model's checkpoint and decoder, and every recipe's artifact-like strings (``model.checkpoint``,
    ``eval.reference``, data archives), exist in the registry: a missing entry would make ``download --recipe``
    drop the file and sampling fail later with "unknown artifact"."""
    from mixflow_bench.hub.registry import integrity
    from mixflow_bench.models.zoo import ZOO
    from mixflow_bench.recipes import load_recipe

    names = set(registry())
    for model, spec in ZOO.items():
        for needed in filter(None, (spec.checkpoint, spec.decoder if spec.decoder != "rae-dinov2-b" else None)):
            assert needed in names, (model, needed)
    for recipe in full_recipes():
        loaded = load_recipe(recipe)
        checkpoint = loaded.model.checkpoint
        if checkpoint is not None and not any(ch in str(checkpoint) for ch in "/\\."):
            assert checkpoint in names, (recipe, checkpoint)
        reference = loaded.eval.reference if loaded.eval else None
        if reference is not None and not str(reference).endswith(".npz"):
            assert reference in names, (recipe, reference)
    art = get_artifact("gmflow-dit")
    assert (art.hf.repo_id, art.hf.filename) == (
        "Lakonik/gmflow_imagenet_k8_ema", "transformer/diffusion_pytorch_model.bf16.safetensors")
    assert integrity(art) == "host sha256"
