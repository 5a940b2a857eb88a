"""Per-sample randomness: the noise, label and SDE noise of sample ``i`` depend only on ``(seed, i)``.

Each draw uses its own ``torch.Generator`` seeded from a hash of ``(seed, stream, i[, step])``, so the output of a
sampling run does not depend on the batch size, the number of processes or the order in which shards are made.
Generators are created on the CPU and the numbers moved to the model's device afterwards (CPU draws are the same
on every machine).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

STREAM_NOISE = 1
STREAM_LABEL = 2
STREAM_STEP = 3


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from integers (stable across runs, platforms and Python versions)."""
    digest = hashlib.blake2b(struct.pack(f"<{len(parts)}q", *parts), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def sample_generator(seed: int, stream: int, index: int, step: int = 0) -> torch.Generator:
    """The CPU generator of one sample's draw in one stream (and SDE step)."""
    return torch.Generator().manual_seed(derive_seed(seed, stream, index, step))


def initial_noise(seed: int, indices: Sequence[int], shape: tuple[int, ...]) -> Tensor:
    """Start noise (len(indices), *shape), float32, row k a function of (seed, indices[k]) only."""
    return torch.stack([torch.randn(shape, generator=sample_generator(seed, STREAM_NOISE, int(i))) for i in indices])


def step_noise(seed: int, indices: Sequence[int], shape: tuple[int, ...], step: int) -> Tensor:
    """SDE noise of sampler step ``step`` for the given samples: a function of (seed, index, step) only."""
    return torch.stack(
        [torch.randn(shape, generator=sample_generator(seed, STREAM_STEP, int(i), step + 1)) for i in indices]
    )


def sample_labels(seed: int, num: int, num_classes: int, mode: str) -> np.ndarray:
    """Labels of all ``num`` samples (int64).

    ``uniform``: label i is uniform over the classes, drawn from (seed, i). ``equal``: exactly ``num /
    num_classes`` of each class, shuffled with ``seed`` (RAE's protocol); when ``num`` is not a multiple of the
    number of classes, each class gets ``num // num_classes`` and a seeded random subset of classes one more.
    """
    if num_classes <= 1:
        return np.zeros(num, dtype=np.int64)
    if mode == "uniform":
        gens = (sample_generator(seed, STREAM_LABEL, i) for i in range(num))
        draws = [torch.randint(num_classes, (1,), generator=g) for g in gens]
        return np.array([int(d) for d in draws], dtype=np.int64)
    if mode == "equal":
        labels = torch.arange(num) % num_classes
        extra = num % num_classes
        if extra:  # the remainder goes to a random subset of classes, not always the first ones
            chosen = torch.randperm(
                num_classes, generator=torch.Generator().manual_seed(derive_seed(seed, STREAM_LABEL, -2))
            )
            labels[num - extra :] = chosen[:extra]
        perm = torch.randperm(num, generator=torch.Generator().manual_seed(derive_seed(seed, STREAM_LABEL, -1)))
        return labels[perm].numpy().astype(np.int64)
    raise ValueError(f"unknown label mode {mode!r} (expected 'uniform' or 'equal')")
