"""FID/sFID, IS and precision/recall against independent references (scipy, numpy, brute force, other
libraries' own metric functions) on synthetic features."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

from mixflow_bench.metrics.frechet import (
    GaussianStats,
    MomentAccumulator,
    frechet_distance,
    stats_from_features,
)
from mixflow_bench.metrics.inception_score import inception_score
from mixflow_bench.metrics.precision_recall import manifold_radii, precision_recall


def _features(n: int, d: int, seed: int, shift: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(d, d)) / np.sqrt(d)
    return (rng.normal(size=(n, d)) @ mix + shift + 3.0).astype(np.float32)


def _fid_scipy(f1: np.ndarray, f2: np.ndarray) -> float:
    """TTUR/ADM formula written out with np.cov and scipy.linalg.sqrtm."""
    m1, m2 = f1.astype(np.float64).mean(0), f2.astype(np.float64).mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    root = scipy.linalg.sqrtm(s1 @ s2)
    root = root[0] if isinstance(root, tuple) else root
    return float(((m1 - m2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(root).real)


def test_streaming_moments_match_np_cov():
    f = _features(1037, 64, 0) + 1000.0  # a large mean stresses cancellation
    acc = MomentAccumulator()
    for chunk in np.array_split(f, 7):
        acc.update(torch.from_numpy(chunk))
    st = acc.finalize()
    np.testing.assert_allclose(st.mu, f.astype(np.float64).mean(0), rtol=1e-12)
    np.testing.assert_allclose(st.sigma, np.cov(f, rowvar=False), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("d", [64, 203])
def test_fid_against_scipy_both_methods(d):
    f1, f2 = _features(900, d, 1), _features(800, d, 2, shift=0.3)
    ref = _fid_scipy(f1, f2)
    a, b = stats_from_features(f1), stats_from_features(f2)
    assert frechet_distance(a, b, "scipy") == pytest.approx(ref, rel=1e-9)
    assert frechet_distance(a, b, "eigh") == pytest.approx(ref, rel=1e-6)


def test_fid_rank_deficient_eps_retry_and_eigh_agree():
    # fewer samples than dimensions: singular covariances (the sFID case at small N)
    f1, f2 = _features(40, 60, 3), _features(40, 60, 4, shift=0.1)
    a, b = stats_from_features(f1), stats_from_features(f2)
    v_scipy = frechet_distance(a, b, "scipy")
    v_eigh = frechet_distance(a, b, "eigh")
    assert v_eigh == pytest.approx(v_scipy, rel=1e-5)


def test_singular_covariance_is_one_warning_of_ours_not_scipys():
    import warnings

    from mixflow_bench.metrics.frechet import SingularCovarianceWarning

    rng = np.random.default_rng(13)
    f1, f2 = np.maximum(rng.normal(size=(20, 80)), 0), np.maximum(rng.normal(size=(20, 80)), 0)
    f1[:, :10] = 0  # dimensions that never vary, as post-ReLU features of few images have
    a, b = stats_from_features(f1), stats_from_features(f2)
    for method in ("scipy", "eigh"):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            value = frechet_distance(a, b, method)
        assert [w.category for w in caught] == [SingularCovarianceWarning], [str(w.message) for w in caught]
        assert "20 samples for 80 dimensions" in str(caught[0].message)
        assert np.isfinite(value)


def test_fid_against_torch_fidelity_and_clean_fid():
    from cleanfid.fid import frechet_distance as cf_fd
    from torch_fidelity.metric_fid import fid_statistics_to_metric

    f1, f2 = _features(3000, 256, 5), _features(2500, 256, 6, shift=0.2)
    a, b = stats_from_features(f1), stats_from_features(f2)
    ours = frechet_distance(a, b, "scipy")
    tf_val = fid_statistics_to_metric({"mu": a.mu, "sigma": a.sigma}, {"mu": b.mu, "sigma": b.sigma}, False)[
        "frechet_inception_distance"
    ]
    cf_val = cf_fd(a.mu, a.sigma, b.mu, b.sigma)
    assert ours == pytest.approx(tf_val, rel=1e-8)
    assert ours == pytest.approx(cf_val, rel=1e-8)
    assert frechet_distance(a, b, "eigh") == pytest.approx(cf_val, rel=1e-7)


def test_fid_refuses_nonfinite_and_mismatched_stats():
    a = GaussianStats(np.zeros(3), np.eye(3))
    with pytest.raises(ValueError, match="NaN or inf"):
        frechet_distance(a, GaussianStats(np.array([0, np.nan, 0.0]), np.eye(3)))
    with pytest.raises(ValueError, match="different dimensions"):
        frechet_distance(a, GaussianStats(np.zeros(4), np.eye(4)))


def _is_numpy(logits: np.ndarray, split: int) -> float:
    """improved-gan Inception Score on softmax(logits), splits in order, last split kept."""
    scores = []
    for i in range(0, len(logits), split):
        z = logits[i : i + split].astype(np.float64)
        z = z - z.max(1, keepdims=True)
        p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
        kl = p * (np.log(p) - np.log(p.mean(0, keepdims=True)))
        scores.append(np.exp(kl.sum(1).mean()))
    return float(np.mean(scores))


@pytest.mark.parametrize("n", [12000, 10000])
def test_inception_score_against_numpy(n):
    rng = np.random.default_rng(7)
    logits = (rng.normal(size=(n, 1008)) * 3).astype(np.float32)
    logits[: n // 2, 5] += 6  # make splits differ
    ours = inception_score(torch.from_numpy(logits))
    assert ours == pytest.approx(_is_numpy(logits, 5000), rel=1e-10)
    if n == 10000:  # equal 5000-splits: torch-fidelity without shuffling uses the same splits
        from torch_fidelity.metric_isc import isc_features_to_metric

        tf_val = isc_features_to_metric(torch.from_numpy(logits), splits=2, shuffle=False)[
            "inception_score_mean"
        ]
        assert ours == pytest.approx(tf_val, rel=1e-10)


def _pr_bruteforce(ref: np.ndarray, smp: np.ndarray, k: int = 3) -> tuple[float, float]:
    """Double loops over float64 squared distances; radius = (k+1)-th smallest, self included."""

    def d2(a, b):
        return float(sum((float(x) - float(y)) ** 2 for x, y in zip(a, b)))

    def radii(x):
        out = []
        for i in range(len(x)):
            ds = sorted(d2(x[i], x[j]) for j in range(len(x)))
            out.append(ds[k])
        return out

    rr, rs = radii(ref), radii(smp)
    prec = np.mean([any(d2(s, ref[i]) <= rr[i] for i in range(len(ref))) for s in smp])
    rec = np.mean([any(d2(r, smp[j]) <= rs[j] for j in range(len(smp))) for r in ref])
    return float(prec), float(rec)


@pytest.mark.parametrize("mode", ["adm", "exact"])
def test_precision_recall_bruteforce_with_ties(mode):
    # small integer features: every squared distance is an exact integer in fp16/fp32, so ties are real ties
    rng = np.random.default_rng(11)
    ref = rng.integers(0, 4, size=(70, 5)).astype(np.float32)
    smp = (rng.integers(0, 4, size=(60, 5)) + (rng.random((60, 5)) < 0.2)).astype(np.float32)
    want = _pr_bruteforce(ref, smp)
    # block=16 exercises the blocked radius merge and OR-accumulation
    got = precision_recall(torch.from_numpy(ref), torch.from_numpy(smp), mode=mode, block=16)
    assert (got.precision, got.recall) == pytest.approx(want, abs=1e-12)
    # ties exist: some radius equals a cross distance exactly
    assert 0 < got.precision < 1 and 0 < got.recall <= 1


def test_radii_are_fourth_smallest_including_self():
    x = torch.tensor([[0.0], [1.0], [3.0], [6.0], [10.0]])
    r = manifold_radii(x, mode="exact", block=2)
    want = []
    for i in range(5):
        ds = sorted((float(x[i]) - float(x[j])) ** 2 for j in range(5))
        want.append(ds[3])
    assert r.tolist() == want


def test_precision_recall_against_torch_fidelity_continuous():
    from torch_fidelity.metric_prc import calculate_precision_recall_full

    ref = torch.from_numpy(_features(600, 32, 8))
    smp = torch.from_numpy(_features(500, 32, 9, shift=0.15))
    ours = precision_recall(ref, smp, mode="exact")
    tp, tr = calculate_precision_recall_full(smp, ref, 3, 10000)  # input1 = generated, input2 = real
    assert abs(ours.precision - tp) <= 2 / 500 and abs(ours.recall - tr) <= 2 / 600
    adm = precision_recall(ref, smp, mode="adm")
    assert abs(adm.precision - ours.precision) <= 0.02 and abs(adm.recall - ours.recall) <= 0.02


def test_adm_mode_falls_back_to_fp32_when_fp16_overflows():
    # squared norms above fp16's 65504: the fp16 block is inf, so ADM recomputes in fp32
    rng = np.random.default_rng(12)
    ref = torch.from_numpy((rng.normal(size=(50, 8)) * 200).astype(np.float32))
    smp = torch.from_numpy((rng.normal(size=(40, 8)) * 200).astype(np.float32))
    a = precision_recall(ref, smp, mode="adm")
    e = precision_recall(ref, smp, mode="exact")
    assert (a.precision, a.recall) == (e.precision, e.recall)
    want = _pr_bruteforce(ref.numpy(), smp.numpy())
    assert (e.precision, e.recall) == pytest.approx(want, abs=1e-12)
