"""Improved Precision/Recall (Kynkäänniemi et al.) as in ADM's ``ManifoldEstimator``, on torch.

Squared Euclidean distances ``max(|u|² − 2u·v + |v|², 0)``; the radius of a point is the 4th smallest distance
to its own set, self included (k=3). precision = share of samples inside some reference ball, recall = share
of references inside some sample ball (``<=``). Mode "adm" computes each 10000×10000 block in float16 first
and recomputes the block in float32 when any entry is not finite, as ADM does; mode "exact" is float32 only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

ADM_BLOCK = 10000
K_NEIGHBOURS = 3


def pairwise_sq_distances(u: torch.Tensor, v: torch.Tensor, mode: str = "adm") -> torch.Tensor:
    """float32 block of squared distances between rows of ``u`` and rows of ``v``."""

    def block(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        nu = (a * a).sum(1).reshape(-1, 1)
        nv = (b * b).sum(1).reshape(1, -1)
        return torch.clamp(nu - 2 * (a @ b.T) + nv, min=0)

    if mode == "adm":
        d16 = block(u.half(), v.half())
        if bool(torch.isfinite(d16).all()):
            return d16.float()
    elif mode != "exact":
        raise ValueError(f"unknown precision/recall mode {mode!r} (adm or exact)")
    return block(u.float(), v.float())


def _no_tf32():
    class _Ctx:
        def __enter__(self):
            self.prev = torch.backends.cuda.matmul.allow_tf32
            torch.backends.cuda.matmul.allow_tf32 = False

        def __exit__(self, *exc):
            torch.backends.cuda.matmul.allow_tf32 = self.prev

    return _Ctx()


def manifold_radii(
    feats: torch.Tensor, k: int = K_NEIGHBOURS, mode: str = "adm", block: int = ADM_BLOCK
) -> torch.Tensor:
    """Squared radius of each point: the (k+1)-th smallest distance to its own set, self included."""
    n = feats.shape[0]
    if n <= k:
        raise ValueError(f"need more than {k} feature vectors for k={k} neighbourhoods, got {n}")
    radii = torch.empty(n, dtype=torch.float32, device=feats.device)
    with _no_tf32():
        for r0 in range(0, n, block):
            rows = feats[r0 : r0 + block]
            best = None
            for c0 in range(0, n, block):
                d = pairwise_sq_distances(rows, feats[c0 : c0 + block], mode)
                cand = d if best is None else torch.cat([best, d], 1)
                best = torch.topk(cand, min(k + 1, cand.shape[1]), dim=1, largest=False).values
            radii[r0 : r0 + block] = best[:, k]
    return radii


@dataclass
class PrecisionRecall:
    precision: float
    recall: float


def precision_recall(
    ref: torch.Tensor, samples: torch.Tensor, k: int = K_NEIGHBOURS, mode: str = "adm", block: int = ADM_BLOCK
) -> PrecisionRecall:
    """Improved precision and recall of ``samples`` against ``ref`` (feature matrices on one device)."""
    ref_r = manifold_radii(ref, k, mode, block)
    smp_r = manifold_radii(samples, k, mode, block)
    ref_in = torch.zeros(ref.shape[0], dtype=torch.bool, device=ref.device)
    smp_in = torch.zeros(samples.shape[0], dtype=torch.bool, device=ref.device)
    with _no_tf32():
        for r0 in range(0, ref.shape[0], block):
            for c0 in range(0, samples.shape[0], block):
                d = pairwise_sq_distances(ref[r0 : r0 + block], samples[c0 : c0 + block], mode)
                ref_in[r0 : r0 + block] |= (d <= smp_r[None, c0 : c0 + block]).any(1)
                smp_in[c0 : c0 + block] |= (d <= ref_r[r0 : r0 + block, None]).any(0)
    return PrecisionRecall(precision=float(smp_in.double().mean()), recall=float(ref_in.double().mean()))
