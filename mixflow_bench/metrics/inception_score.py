"""Inception Score as ADM computes it: splits of 5000 in file order, mean over splits of exp(E[KL(p‖p̄)]).

Logits are the bias-free 1008-class ones; the last split may be shorter (ADM keeps it). Computed in float64.
"""

from __future__ import annotations

import torch

SPLIT_SIZE = 5000


def split_score(logits: torch.Tensor) -> float:
    """exp(mean_n KL(p_n ‖ mean_n p_n)) for one split of logits."""
    logp = torch.log_softmax(logits.to(torch.float64), dim=1)
    p = logp.exp()
    log_pbar = torch.log(p.mean(0, keepdim=True))
    kl = (p * (logp - log_pbar)).sum(1).mean()
    return float(torch.exp(kl))


class InceptionScoreAccumulator:
    """Takes logits batches in file order and scores each completed split."""

    def __init__(self, split_size: int = SPLIT_SIZE) -> None:
        self.split_size = split_size
        self._buf: list[torch.Tensor] = []
        self._buffered = 0
        self.scores: list[float] = []
        self.count = 0

    def update(self, logits: torch.Tensor) -> None:
        self.count += logits.shape[0]
        while logits.shape[0]:
            take = min(self.split_size - self._buffered, logits.shape[0])
            self._buf.append(logits[:take])
            self._buffered += take
            logits = logits[take:]
            if self._buffered == self.split_size:
                self._flush()

    def _flush(self) -> None:
        if self._buffered:
            self.scores.append(split_score(torch.cat(self._buf)))
        self._buf, self._buffered = [], 0

    def finalize(self) -> float:
        self._flush()
        if not self.scores:
            raise ValueError("no logits for the Inception Score")
        return float(sum(self.scores) / len(self.scores))


def inception_score(logits: torch.Tensor, split_size: int = SPLIT_SIZE) -> float:
    acc = InceptionScoreAccumulator(split_size)
    acc.update(logits)
    return acc.finalize()
