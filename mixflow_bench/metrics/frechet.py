"""Feature statistics (mean, np.cov covariance) and the Fréchet distance with ADM's numerics.

ADM (``FIDStatistics.frechet_distance``): ``|Δμ|² + tr S1 + tr S2 − 2 tr sqrtm(S1 S2)``; if the square root is
not finite it retries with ``1e-6·I`` added to both covariances; a complex result is accepted only when the
imaginary parts of its diagonal are within 1e-3 of zero. ``method="scipy"`` reproduces that with SciPy's
``sqrtm`` (its ``disp`` argument is deprecated since 1.16, so it is not used). ``method="eigh"`` takes
``tr sqrtm(S1 S2) = Σ sqrt(eig(√S1 S2 √S1))`` with symmetric eigendecompositions in float64 (GPU-friendly; it
stays real for the rank-deficient covariances of small sets, which is why the toy studies use it).
``method="eigvals"`` is torchmetrics' ``Σ Re √eig(S1 S2)`` of the non-symmetric product, in float64.
Every Fréchet distance of the project (ADM FID/sFID, FD-DINOv2, the torchmetrics protocol, the toy data-space FD)
goes through :func:`fd_moments`.

A singular covariance (fewer vectors than dimensions, or dimensions that never vary) is reported once, as a
:class:`SingularCovarianceWarning` with one readable line, instead of SciPy's ``LinAlgWarning``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
from scipy import linalg

ADM_EPS = 1e-6
ADM_IMAG_ATOL = 1e-3


class SingularCovarianceWarning(UserWarning):
    """A covariance in the Fréchet distance is singular, so its matrix square root is ill-conditioned."""


@dataclass
class GaussianStats:
    mu: np.ndarray  # (D,) float64
    sigma: np.ndarray  # (D, D) float64
    count: int = 0


class MomentAccumulator:
    """Streams feature batches into a float64 mean and an unbiased (ddof=1) covariance, like ``np.cov``.

    Sums are taken around a shift (the first batch's mean) so that large means do not cancel."""

    def __init__(self) -> None:
        self.n = 0
        self.shift: torch.Tensor | None = None
        self.s1: torch.Tensor | None = None
        self.s2: torch.Tensor | None = None

    def update(self, feats: torch.Tensor) -> None:
        x = feats.to(torch.float64)
        if self.shift is None:
            self.shift = x.mean(0)
            self.s1 = torch.zeros_like(self.shift)
            self.s2 = torch.zeros(x.shape[1], x.shape[1], dtype=torch.float64, device=x.device)
        xc = x - self.shift
        self.s1 += xc.sum(0)
        self.s2 += xc.T @ xc
        self.n += x.shape[0]

    def finalize(self) -> GaussianStats:
        if self.n < 2:
            raise ValueError(f"need at least 2 feature vectors for a covariance, got {self.n}")
        m = self.s1 / self.n
        cov = (self.s2 - self.n * torch.outer(m, m)) / (self.n - 1)
        mu = (self.shift + m).cpu().numpy()
        return GaussianStats(mu=mu, sigma=cov.cpu().numpy(), count=self.n)


def stats_from_features(feats: np.ndarray | torch.Tensor) -> GaussianStats:
    """Mean and np.cov covariance of N samples (flattened to N×D), in float64."""
    if isinstance(feats, torch.Tensor):
        feats = feats.detach().cpu().numpy()
    x = np.asarray(feats, dtype=np.float64).reshape(len(feats), -1)
    return GaussianStats(mu=x.mean(0), sigma=np.atleast_2d(np.cov(x, rowvar=False)), count=len(x))


def _sqrtm(a: np.ndarray) -> tuple[np.ndarray, bool]:
    """SciPy's square root, and whether SciPy found the matrix singular (its warning is kept quiet)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", linalg.LinAlgWarning)
        out = linalg.sqrtm(a)
    singular = any(issubclass(w.category, linalg.LinAlgWarning) for w in caught)
    for w in caught:  # anything else is passed on
        if not issubclass(w.category, linalg.LinAlgWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return (out[0] if isinstance(out, tuple) else out), singular


def singular_reason(a: GaussianStats, b: GaussianStats) -> str | None:
    """Why a covariance is singular for sure: fewer feature vectors than dimensions, or a constant dimension."""
    for side, st in (("samples", a), ("reference", b)):
        sigma = np.atleast_2d(st.sigma)
        dim = sigma.shape[0]
        if 0 < st.count <= dim:
            return f"{st.count:,} {side} for {dim:,} dimensions"
        flat = int((np.diagonal(sigma) <= 0).sum())
        if flat:
            return f"{flat} of {dim:,} feature dimensions never vary over the {side}"
    return None


def _trace_sqrt_scipy(s1: np.ndarray, s2: np.ndarray, eps: float) -> tuple[float, bool]:
    covmean, singular = _sqrtm(s1.dot(s2))
    if not np.isfinite(covmean).all():
        singular = True
        offset = np.eye(s1.shape[0]) * eps
        covmean, _ = _sqrtm((s1 + offset).dot(s2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=ADM_IMAG_ATOL):
            raise ValueError(f"Fréchet distance: imaginary component {np.max(np.abs(covmean.imag))}")
        covmean = covmean.real
    return float(np.trace(covmean)), singular


def _trace_sqrt_eigh(s1: np.ndarray, s2: np.ndarray, eps: float, device: str | torch.device) -> float:
    def attempt(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        w, v = torch.linalg.eigh(a)
        root_a = (v * w.clamp(min=0).sqrt()) @ v.T
        m = root_a @ b @ root_a
        ev = torch.linalg.eigvalsh((m + m.T) / 2)
        return ev.clamp(min=0).sqrt().sum()

    a = torch.as_tensor(s1, dtype=torch.float64, device=device)
    b = torch.as_tensor(s2, dtype=torch.float64, device=device)
    tr = attempt(a, b)
    if not torch.isfinite(tr):
        eye = torch.eye(a.shape[0], dtype=torch.float64, device=device) * eps
        tr = attempt(a + eye, b + eye)
    return float(tr)


FD_METHODS = ("scipy", "eigh", "eigvals")


def _trace_sqrt_eigvals(s1: np.ndarray, s2: np.ndarray) -> float:
    a, b = torch.as_tensor(s1, dtype=torch.float64), torch.as_tensor(s2, dtype=torch.float64)
    return float(torch.linalg.eigvals(a @ b).sqrt().real.sum())


def _as_float64(x: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def fd_moments(
    mu1: np.ndarray | torch.Tensor,
    s1: np.ndarray | torch.Tensor,
    mu2: np.ndarray | torch.Tensor,
    s2: np.ndarray | torch.Tensor,
    method: str = "eigh",
    device: str | torch.device = "cpu",
    eps: float = ADM_EPS,
) -> float:
    """``|μ1 − μ2|² + tr S1 + tr S2 − 2 tr sqrtm(S1 S2)`` in float64; ``method`` one of :data:`FD_METHODS`
    (module docstring). No singularity report: :func:`frechet_distance` adds it."""
    return _fd(mu1, s1, mu2, s2, method, device, eps)[0]


def _fd(mu1, s1, mu2, s2, method: str, device: str | torch.device, eps: float) -> tuple[float, bool]:
    """The distance, and whether SciPy's square root found the product singular (scipy method only)."""
    mu1, mu2 = np.atleast_1d(_as_float64(mu1)), np.atleast_1d(_as_float64(mu2))
    s1, s2 = np.atleast_2d(_as_float64(s1)), np.atleast_2d(_as_float64(s2))
    if mu1.shape != mu2.shape or s1.shape != s2.shape:
        raise ValueError(f"statistics of different dimensions: means {mu1.shape} vs {mu2.shape}, "
                         f"covariances {s1.shape} vs {s2.shape}")  # fmt: skip
    singular = False
    if method == "scipy":
        tr, singular = _trace_sqrt_scipy(s1, s2, eps)
    elif method == "eigh":
        tr = _trace_sqrt_eigh(s1, s2, eps, device)
    elif method == "eigvals":
        tr = _trace_sqrt_eigvals(s1, s2)
    else:
        raise ValueError(f"unknown Fréchet method {method!r} ({', '.join(FD_METHODS)})")
    diff = mu1 - mu2
    return float(diff.dot(diff) + np.trace(s1) + np.trace(s2) - 2 * tr), singular


def frechet_distance(
    a: GaussianStats,
    b: GaussianStats,
    method: str = "scipy",
    device: str | torch.device = "cpu",
    eps: float = ADM_EPS,
) -> float:
    """Fréchet distance of two Gaussians; ``method`` one of :data:`FD_METHODS` ("scipy" is ADM's path).

    Refuses NaN/inf statistics; warns once with :class:`SingularCovarianceWarning` when a covariance is
    singular."""
    for name, arr in (("mu", a.mu), ("mu", b.mu), ("sigma", a.sigma), ("sigma", b.sigma)):
        if not np.isfinite(np.asarray(arr, dtype=np.float64)).all():
            raise ValueError(f"statistics contain NaN or inf ({name})")
    value, singular = _fd(a.mu, a.sigma, b.mu, b.sigma, method, device, eps)
    reason = singular_reason(a, b)
    if singular and reason is None:
        reason = "the covariance product is numerically singular"
    if reason:
        warnings.warn(
            f"singular covariance ({reason}): ill-conditioned, not comparable with values from many more samples",
            SingularCovarianceWarning,
            stacklevel=2,
        )
    return value
