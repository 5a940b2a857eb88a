"""Hugging Face artifacts through hf_hub_download, against a local endpoint set with HF_ENDPOINT."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from mixflow_bench.hub import DownloadError, IntegrityError, OfflineError, fetch, status
from mixflow_bench.hub.testserver import FaultyServer, ServedFile

pytestmark = pytest.mark.timeout(60)
REPO_PATH = "/stabilityai/sd-vae-ft-ema/resolve/main"


@pytest.fixture
def hf_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("MIXFLOW_BENCH_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with FaultyServer() as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url(""))
        yield server


def host(server: FaultyServer, data: bytes) -> None:
    headers = {"X-Repo-Commit": "0123456789abcdef0123456789abcdef01234567"}
    sha = hashlib.sha256(data).hexdigest()
    server.files[f"{REPO_PATH}/diffusion_pytorch_model.safetensors"] = ServedFile(
        data, etag=f'"{sha}"', headers=headers
    )
    server.files[f"{REPO_PATH}/config.json"] = ServedFile(
        b'{"_class_name": "AutoencoderKL"}', etag='"cfg"', headers=headers
    )


def safetensors_bytes(seed: int = 0) -> bytes:
    import torch
    from safetensors.torch import save

    return save({"decoder.conv_out.weight": torch.randn(3, 128, 3, 3, generator=torch.Generator().manual_seed(seed))})


def test_hf_download_goes_to_hf_cache_and_is_hash_locked(hf_server, tmp_path):
    data = safetensors_bytes()
    host(hf_server, data)
    with pytest.raises(OfflineError, match="mixflow-bench download sd-vae-ft-ema"):
        fetch("sd-vae-ft-ema", offline=True, progress=False)
    path = fetch("sd-vae-ft-ema", progress=False)
    assert path.is_relative_to(tmp_path / "hf") and path.read_bytes() == data
    assert (path.parent / "config.json").exists()  # companion file next to the weights
    lock = json.loads((tmp_path / "home" / "hashes.lock.json").read_text())
    assert lock["sd-vae-ft-ema"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert "/resolve/0123456789abcdef0123456789abcdef01234567/" in lock["sd-vae-ft-ema"]["source"]  # the commit
    assert status("sd-vae-ft-ema").state == "verified"
    # offline use works from the HF cache; a tampered blob is then refused
    assert fetch("sd-vae-ft-ema", offline=True, progress=False) == path
    Path(path).resolve().write_bytes(data[::-1])
    with pytest.raises(IntegrityError, match="the host publishes"):
        fetch("sd-vae-ft-ema", offline=True, progress=False)


def test_hf_missing_file_is_a_clear_error(hf_server):
    with pytest.raises(DownloadError, match="sd-vae-ft-ema"):
        fetch("sd-vae-ft-ema", progress=False)


def test_hf_messages_name_the_hf_cache_the_endpoint_and_force(hf_server, tmp_path):
    data = safetensors_bytes(1)
    host(hf_server, data)
    with pytest.raises(OfflineError) as info:
        fetch("sd-vae-ft-ema", offline=True, progress=False)
    text = str(info.value)
    assert f"HF_HUB_CACHE ({tmp_path / 'hf'}" in text and hf_server.url("") in text and "huggingface.co" not in text
    path = fetch("sd-vae-ft-ema", progress=False)
    Path(path).resolve().write_bytes(data[::-1])
    with pytest.raises(IntegrityError, match=r"mixflow-bench download sd-vae-ft-ema --force"):
        fetch("sd-vae-ft-ema", offline=True, progress=False)


def test_hf_partial_download_resumes_in_another_process_whatever_the_url(hf_server, tmp_path, monkeypatch):
    """The partial blob is keyed by artifact, file and hash: a later process, whose (signed) URL differs,
    continues it with a Range request instead of starting again from byte 0."""
    monkeypatch.setenv("MIXFLOW_BENCH_DOWNLOAD_RETRIES", "0")
    monkeypatch.setenv("MIXFLOW_BENCH_DOWNLOAD_BACKOFF", "0.01")
    import torch
    from safetensors.torch import save

    data = save({"decoder.conv_out.weight": torch.randn(3, 128, 3, 3), "decoder.extra": torch.randn(100_000)})
    host(hf_server, data)
    spec = hf_server.files[f"{REPO_PATH}/diffusion_pytorch_model.safetensors"]
    spec.drop_after, spec.drop_times, spec.ignore_range = 100_000, 2, True  # no progress on the retry: give up
    with pytest.raises(DownloadError):
        fetch("sd-vae-ft-ema", progress=False)
    (meta_file,) = (tmp_path / "hf").rglob("*.partial.json")
    meta = json.loads(meta_file.read_text())
    meta["url"] = "https://cdn.example/signed?X-Amz-Signature=other"  # what another request would be given
    meta_file.write_text(json.dumps(meta))
    spec.ignore_range = False
    assert Path(fetch("sd-vae-ft-ema", progress=False)).read_bytes() == data
    last = hf_server.requests_for(f"{REPO_PATH}/diffusion_pytorch_model.safetensors")[-1]
    assert last.headers.get("Range") == "bytes=100000-" and last.status == 206
