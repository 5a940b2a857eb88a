"""The window comparison of benchmarks/train_fast_vs_exact.py against a hand computation (scipy's t quantile)."""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import pytest
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
bench = pytest.importorskip("train_fast_vs_exact")


def test_windows_compare_paired_differences_with_the_exact_seed_spread():
    exact = {0: [1.0, 0.50], 1: [1.2, 0.52], 2: [1.1, 0.54]}
    fast = {0: [1.01, 0.60], 1: [1.19, 0.62], 2: [1.12, 0.64]}
    rows = bench.compare({"exact": exact, "fast": fast}, [10, 20])
    assert [r["step"] for r in rows] == [10, 20]
    d0 = [0.01, -0.01, 0.02]
    assert rows[0]["fast_minus_exact_mean"] == pytest.approx(statistics.fmean(d0), rel=1e-12)
    half = stats.t.ppf(0.975, 2) * statistics.stdev(d0) / 3**0.5
    lo, hi = rows[0]["fast_minus_exact_ci95"]
    assert lo == pytest.approx(statistics.fmean(d0) - half, rel=1e-3)
    assert hi == pytest.approx(statistics.fmean(d0) + half, rel=1e-3)
    assert rows[0]["exact_seed_std"] == pytest.approx(0.1, rel=1e-12)
    assert rows[0]["within_seed_spread"] is True  # |0.0067| <= 0.1
    assert rows[1]["fast_minus_exact_mean"] == pytest.approx(0.10, rel=1e-12)
    assert rows[1]["within_seed_spread"] is False  # 0.10 > std(0.50, 0.52, 0.54) = 0.02
