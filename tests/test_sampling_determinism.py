"""Sampling output depends only on (seed, sample index): not on batch size or shard layout; labels and
quantization follow the baselines' definitions; the merged npz is a plain ADM batch."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest
import torch

from mixflow_bench.recipes.schema import GuidanceSection, SampleSection
from mixflow_bench.sampling import quantize, sample_labels, sample_to_npz
from mixflow_bench.sampling.models import resolve_model
from mixflow_bench.sampling.velocity import model_generator


def _toy(seed: int = 0):
    torch.manual_seed(seed)
    spec, model = resolve_model("toy-mlp", overrides={"hidden": 32, "depth": 1})
    for p in model.parameters():  # the output layer starts at zero; give it weights that move samples
        torch.nn.init.normal_(p, std=0.3)
    return spec, model


def _sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.mark.parametrize("sampler", ["sde", "euler"])
def test_batch_size_and_shards_do_not_change_bytes(tmp_path, sampler):
    spec, model = _toy()
    cfg = SampleSection(sampler=sampler, steps=6, guidance=GuidanceSection(kind="cfg", scale=1.5))
    gen = model_generator(spec, model, cfg)
    a = sample_to_npz(gen, 30, tmp_path / "a.npz", seed=3, batch_size=3, shard_size=7, progress=False)
    b = sample_to_npz(gen, 30, tmp_path / "b.npz", seed=3, batch_size=8, shard_size=7, progress=False)
    assert _sha(a) == _sha(b)
    # and the same samples as a brute-force loop generating each image alone (batch 1, one shard)
    c = sample_to_npz(gen, 30, tmp_path / "c.npz", seed=3, batch_size=1, shard_size=30, progress=False)
    assert np.array_equal(np.load(a)["arr_0"], np.load(c)["arr_0"])
    d = sample_to_npz(gen, 30, tmp_path / "d.npz", seed=4, batch_size=8, shard_size=7, progress=False)
    assert not np.array_equal(np.load(a)["arr_0"], np.load(d)["arr_0"])


def test_npz_is_adm_layout_and_reads_with_numpy(tmp_path):
    spec, model = _toy()
    gen = model_generator(spec, model, SampleSection(sampler="euler", steps=3))
    out = sample_to_npz(gen, 12, tmp_path / "s.npz", seed=0, batch_size=5, shard_size=5, progress=False)
    with np.load(out) as data:
        assert data.files == ["arr_0", "arr_1"]
        assert data["arr_0"].dtype == np.uint8 and data["arr_0"].shape == (12, 8, 8, 3)
        assert np.array_equal(data["arr_1"], sample_labels(0, 12, 10, "uniform"))
    shards = sorted((tmp_path / "s.npz.shards").glob("shard-*.npz"))
    assert [p.name for p in shards] == ["shard-00000.npz", "shard-00001.npz", "shard-00002.npz"]
    assert np.array_equal(np.load(shards[2])["indices"], [10, 11])


def test_equal_labels_exactly_balanced_and_seeded():
    labels = sample_labels(7, 5000, 1000, "equal")
    assert np.array_equal(np.bincount(labels, minlength=1000), np.full(1000, 5))
    assert not np.array_equal(labels, sample_labels(8, 5000, 1000, "equal"))
    assert not np.array_equal(labels[:1000], np.arange(1000))  # shuffled, not in class order
    # a remainder: every class gets 2 or 3, the 3s on a random subset of 7 classes
    odd = np.bincount(sample_labels(0, 2007, 1000, "equal"), minlength=1000)
    assert sorted(set(odd.tolist())) == [2, 3] and (odd == 3).sum() == 7
    assert not np.array_equal(np.flatnonzero(odd == 3), np.arange(7))


def test_uniform_labels_per_index():
    a = sample_labels(1, 200, 10, "uniform")
    b = sample_labels(1, 50, 10, "uniform")
    assert np.array_equal(a[:50], b)  # label i does not depend on num
    counts = np.bincount(a, minlength=10)
    assert counts.min() > 5  # all classes drawn (expected 20 each)


def test_quantize_matches_baselines():
    x = torch.linspace(-1, 1, 3 * 4 * 5).reshape(1, 3, 4, 5).double()
    images01 = (x + 1) / 2
    sit = torch.clamp(127.5 * x + 128.0, 0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()  # SiT
    repa = torch.clamp(255.0 * images01, 0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()  # REPA / RAE
    assert np.array_equal(quantize(images01, "round"), sit)
    assert np.array_equal(quantize(images01, "truncate"), repa)
    assert not np.array_equal(sit, repa)


def test_fd_data_closed_form():
    from mixflow_bench.metrics.toy import frechet_distance

    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    s1, s2 = rng.uniform(0.1, 2, 5), rng.uniform(0.1, 2, 5)
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(s1) - np.sqrt(s2)) ** 2).sum()
    assert math.isclose(frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)), expected, rel_tol=1e-9)
    # rank-deficient covariances (fewer samples than dimensions) stay real and match scipy's sqrtm formula
    a, b = rng.normal(size=(6, 10)), rng.normal(size=(6, 10))
    c1, c2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    from scipy import linalg

    ref = np.trace(c1) + np.trace(c2) - 2 * np.trace(linalg.sqrtm(c1 @ c2).real)
    assert math.isclose(frechet_distance(np.zeros(10), c1, np.zeros(10), c2), ref, rel_tol=1e-5, abs_tol=1e-6)
