"""Kernel Inception Distance as torch-fidelity defines it (``kid_features_to_metric`` with its defaults).

The unbiased estimate of the squared MMD between the sample and reference features under the cubic polynomial
kernel ``k(x, y) = (x·y / d + 1)³``, averaged over ``subsets`` random subsets of ``subset_size`` features drawn
without replacement from each side. Subsets come from ``numpy.random.RandomState(seed)``, samples' subset first,
then the reference's, in turn, so the subsets are torch-fidelity's for the same features. Kernels and sums are
taken in float64 (torch-fidelity sums float32 kernels of its float32 features, which moves the value by about
1e-6 relative). With fewer than ``subset_size`` features on a side, the
subset size is that smaller count (torch-fidelity refuses instead); the result records the size used.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SUBSETS = 100
SUBSET_SIZE = 1000
DEGREE = 3
COEF0 = 1.0
SEED = 2020


@dataclass
class KID:
    mean: float
    std: float
    subsets: int
    subset_size: int

    def settings(self) -> dict[str, object]:
        return {"kernel": f"polynomial (x.y/d + {COEF0:g})^{DEGREE}", "subsets": self.subsets,
                "subset_size": self.subset_size, "seed": SEED, "estimator": "unbiased MMD²"}  # fmt: skip


def _poly_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return (x @ y.T * (1.0 / x.shape[1]) + COEF0) ** DEGREE


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased squared MMD of two equal-size sets: off-diagonal means within each set, all pairs across."""
    m = x.shape[0]
    k_xx, k_yy, k_xy = _poly_kernel(x, x), _poly_kernel(y, y), _poly_kernel(x, y)
    within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    return float(within - 2 * k_xy.sum() / (m * m))


def kid(
    samples: np.ndarray, reference: np.ndarray, subsets: int = SUBSETS, subset_size: int = SUBSET_SIZE,
    seed: int = SEED,
) -> KID:  # fmt: skip
    """KID of N×D ``samples`` features against M×D ``reference`` features (mean and std over subsets)."""
    samples, reference = np.asarray(samples, np.float64), np.asarray(reference, np.float64)
    if samples.ndim != 2 or reference.ndim != 2 or samples.shape[1] != reference.shape[1]:
        raise ValueError(f"KID needs two N×D feature sets, got {samples.shape} and {reference.shape}")
    size = min(subset_size, len(samples), len(reference))
    if size < 2:
        raise ValueError(f"KID needs at least 2 features per set, got {len(samples)} and {len(reference)}")
    rng = np.random.RandomState(seed)
    values = np.zeros(subsets)
    for i in range(subsets):
        a = samples[rng.choice(len(samples), size, replace=False)]
        b = reference[rng.choice(len(reference), size, replace=False)]
        values[i] = mmd2_unbiased(a, b)
    return KID(float(values.mean()), float(values.std()), subsets, size)
