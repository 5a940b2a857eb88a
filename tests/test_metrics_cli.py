"""`mixflow-bench eval` end to end (random-init weights of the same network, so offline) and its refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from mixflow_bench.cli.eval_cmd import command


@pytest.fixture(scope="module")
def random_weights(tmp_path_factory) -> Path:
    from mixflow_bench.metrics.inception import random_state_dict

    path = tmp_path_factory.mktemp("w") / "random-inception.pth"
    torch.save(random_state_dict(seed=1), path)
    return path


def _imgs(n: int, seed: int, h: int = 32) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, h, h, 3), dtype=np.uint8)


def test_eval_same_file_gives_zero_distance_and_full_pr(tmp_path, random_weights):
    s = tmp_path / "s.npz"
    np.savez(s, arr_0=_imgs(10, 0))
    out = tmp_path / "r.json"
    res = CliRunner().invoke(
        command,
        [
            "--samples",
            str(s),
            "--ref",
            str(s),
            "--json",
            str(out),
            "--inception-weights",
            str(random_weights),
            "--device",
            "cpu",
            "--batch-size",
            "4",
            "--results-dir",
            str(tmp_path / "results"),
            "--metrics",
            "fid,sfid,prec,rec",
            "--fd-method",
            "eigh",
        ],
    )
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    m = data["metrics"]
    # identical sample and reference sets: Fréchet distance 0, every point inside its own ball
    assert abs(m["fid"]) < 1e-4 and abs(m["sfid"]) < 1e-4  # traces are O(1e3)
    assert m["precision"] == 1.0 and m["recall"] == 1.0
    assert data["num_samples"] == 10 and "10 samples" in data["note"]
    assert "(10 samples)" in res.output
    records = list((tmp_path / "results").rglob("*.json"))
    assert records, "no result record written"
    rec = json.loads(records[0].read_text())
    assert rec["kind"] == "eval" and rec["metrics"] == m and rec["num_samples"] == 10


def test_eval_refusals(tmp_path, random_weights):
    good = tmp_path / "g.npz"
    np.savez(good, arr_0=_imgs(6, 1))
    bad = tmp_path / "f.npz"
    np.savez(bad, arr_0=_imgs(6, 1).astype(np.float32) / 255)
    stats_only = tmp_path / "stats.npz"
    np.savez(stats_only, mu=np.zeros(2048), sigma=np.eye(2048), mu_s=np.zeros(2023), sigma_s=np.eye(2023))
    common = ["--inception-weights", str(random_weights), "--device", "cpu", "--results-dir", str(tmp_path)]
    runner = CliRunner()
    r = runner.invoke(command, ["--samples", str(bad), "--ref", str(good), *common])
    assert r.exit_code != 0 and "not uint8" in r.output
    r = runner.invoke(
        command, ["--samples", str(good), "--ref", str(stats_only), "--metrics", "prec", *common]
    )
    assert r.exit_code != 0 and "no images" in r.output
    r = runner.invoke(
        command, ["--samples", str(good), "--ref", str(good), "--metrics", "fid,bogus", *common]
    )
    assert r.exit_code != 0 and "bogus" in r.output
    r = runner.invoke(command, ["--samples", str(good), "--ref", "no-such-artifact-name", *common])
    assert r.exit_code != 0 and "no-such-artifact-name" in r.output


def test_nonfinite_features_refused(tmp_path):
    from mixflow_bench.metrics.features import NonFiniteFeaturesError, extract
    from mixflow_bench.metrics.inception import InceptionOutputs
    from mixflow_bench.metrics.npz_stream import NpzImageReader

    class NaNNet(torch.nn.Module):
        has_logits = True

        def forward(self, x, spatial=True, logits=True):
            f = x.float().mean((2, 3)).repeat(1, 4)
            f[-1, 0] = float("nan")
            return InceptionOutputs(pool=f, spatial=f, logits=f)

    p = tmp_path / "x.npz"
    np.savez(p, arr_0=_imgs(5, 2, 8))
    with NpzImageReader(p) as r, pytest.raises(NonFiniteFeaturesError, match="NaN or inf"):
        extract(r, NaNNet(), device="cpu", batch_size=2, inception_score=False)


def test_stored_reference_stats_are_used(tmp_path):
    """A reference with mu/sigma uses them (not arr_0) for FID, as ADM's read_statistics does."""
    from mixflow_bench.metrics.frechet import GaussianStats, frechet_distance
    from mixflow_bench.metrics.reference import load_reference

    rng = np.random.default_rng(3)
    mu, a = rng.normal(size=2048), rng.normal(size=(2048, 16))
    cov = a @ a.T + np.eye(2048)
    ref = tmp_path / "ref.npz"
    np.savez(ref, arr_0=_imgs(4, 3, 8), mu=mu, sigma=cov, mu_s=mu[:2023], sigma_s=cov[:2023, :2023])
    data = load_reference(ref, net=None, need_fid=True, need_sfid=True, need_pr=False, device="cpu")
    assert data.stats_source == "stored"
    np.testing.assert_array_equal(data.pool_stats.mu, mu)
    same = frechet_distance(data.pool_stats, GaussianStats(mu, cov), "eigh")
    assert abs(same) < 1e-6


def test_fd_dinov2_tiny_model_and_missing_weights(tmp_path):
    from transformers import Dinov2Config, Dinov2Model

    from mixflow_bench.metrics.dinov2 import fd_dinov2

    with pytest.raises(FileNotFoundError, match="DINOv2"):
        fd_dinov2(tmp_path / "a.npz", tmp_path / "a.npz", None)
    cfg = Dinov2Config(
        hidden_size=8,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=16,
        patch_size=56,
        image_size=224,
    )
    Dinov2Model(cfg).save_pretrained(tmp_path / "dino")
    a = tmp_path / "a.npz"
    np.savez(a, arr_0=_imgs(12, 4))
    assert abs(fd_dinov2(a, a, tmp_path / "dino", method="eigh")) < 1e-6  # identical sets
