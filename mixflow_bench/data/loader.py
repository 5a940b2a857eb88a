"""Training-time reading: a memory-mapped latent cache and resumable, DDP-sharded batch streams.

Order: epoch ``e`` visits the samples in ``permutation(seed, e)``; global batch ``k`` of the epoch is the
slice ``[k*G, (k+1)*G)`` of it and rank ``r`` of ``W`` takes the ``r``-th contiguous ``G/W`` chunk, so the
union over ranks is the single-process global batch. Per-sample randomness (which stored orientation, and the
``eps`` of an SD-VAE posterior sample ``z = mean + std * eps``) comes from a hash of (seed, epoch, index),
so it does not depend on batch composition, world size or where a run was resumed. ``state_dict()`` is the
global position (epoch, step); a run restored with ``load_state_dict()`` sees the batches it would have seen.
Orders use NumPy's ``PCG64`` seeded by ``SeedSequence([seed, epoch])``.
"""

from __future__ import annotations

import abc
import os
import queue
import sys
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mixflow_bench.data import cache
from mixflow_bench.data.codec import Codec
from mixflow_bench.models.latents import latent_scale, model_latent_from_stored

_MASK64 = (1 << 64) - 1
_SALT_FLIP = 0x5F1
_SALT_NOISE = 0xE95
PREFETCH_THREAD = "mixflow-batch-prefetch"  # the name of the thread that builds batches ahead


def sample_hash(seed: int, epoch: int, indices: np.ndarray, salt: int) -> np.ndarray:
    """SplitMix64-style hash of (seed, epoch, index, salt) -> uint64 per index (vectorised)."""
    base = (seed * 0x9E3779B97F4A7C15 + epoch * 0xBF58476D1CE4E5B9 + salt * 0x94D049BB133111EB) & _MASK64
    with np.errstate(over="ignore"):
        z = np.asarray(indices, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15) + np.uint64(base)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def flip_choices(seed: int, epoch: int, indices: np.ndarray) -> np.ndarray:
    """0 (original) or 1 (mirrored) per sample, p=1/2, fixed by (seed, epoch, index)."""
    return (sample_hash(seed, epoch, indices, _SALT_FLIP) >> np.uint64(63)).astype(np.int64)


def noise_seeds(seed: int, epoch: int, indices: np.ndarray) -> list[int]:
    """One torch generator seed per sample, fixed by (seed, epoch, index)."""
    return [int(v) >> 1 for v in sample_hash(seed, epoch, indices, _SALT_NOISE)]


class ResumableSampler:
    """Deterministic global-batch order over ``num_samples``; iterates this rank's index slices forever."""

    def __init__(
        self,
        num_samples: int,
        global_batch_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = True,
        shuffle: bool = True,
    ) -> None:
        if world_size <= 0 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
        if global_batch_size <= 0 or global_batch_size % world_size:
            raise ValueError(f"global_batch_size {global_batch_size} must be a positive multiple of {world_size=}")
        if num_samples <= 0 or (drop_last and num_samples < global_batch_size):
            raise ValueError(f"{num_samples} samples cannot fill one global batch of {global_batch_size}")
        self.num_samples, self.global_batch_size = num_samples, global_batch_size
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.drop_last, self.shuffle = drop_last, shuffle
        self.epoch, self.step = 0, 0
        self._perm_epoch, self._perm = None, None

    @property
    def steps_per_epoch(self) -> int:
        g = self.global_batch_size
        return self.num_samples // g if self.drop_last else -(-self.num_samples // g)

    def permutation(self, epoch: int) -> np.ndarray:
        """The visiting order of ``epoch``."""
        if self._perm_epoch != epoch:
            if self.shuffle:
                rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([self.seed, epoch])))
                self._perm = rng.permutation(self.num_samples)
            else:
                self._perm = np.arange(self.num_samples)
            self._perm_epoch = epoch
        return self._perm

    def global_batch(self, epoch: int, step: int) -> np.ndarray:
        """Indices of global batch ``step`` of ``epoch`` (all ranks)."""
        g = self.global_batch_size
        return self.permutation(epoch)[step * g : (step + 1) * g]

    def rank_slice(self, batch: np.ndarray) -> np.ndarray:
        """This rank's contiguous chunk of a global batch."""
        return np.array_split(batch, self.world_size)[self.rank]

    def advance(self, epoch: int, step: int) -> tuple[int, int]:
        step += 1
        return (epoch + 1, 0) if step >= self.steps_per_epoch else (epoch, step)

    def __iter__(self) -> Iterator[np.ndarray]:
        while True:
            idx = self.rank_slice(self.global_batch(self.epoch, self.step))
            self.epoch, self.step = self.advance(self.epoch, self.step)
            yield idx

    def state_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "step": self.step,
            "seed": self.seed,
            "num_samples": self.num_samples,
            "global_batch_size": self.global_batch_size,
            "drop_last": self.drop_last,
            "shuffle": self.shuffle,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key in ("seed", "num_samples", "global_batch_size", "drop_last", "shuffle"):
            if key in state and state[key] != getattr(self, key):
                raise ValueError(
                    f"cannot resume: saved {key}={state[key]!r} but this loader has {key}={getattr(self, key)!r}"
                )
        self.epoch, self.step = int(state["epoch"]), int(state["step"])


class LatentDataset:
    """A prepared latent cache (see :mod:`mixflow_bench.data.cache`), memory-mapped shard by shard."""

    def __init__(self, directory: str | os.PathLike, verify: bool = False) -> None:
        self.directory = str(directory)
        if verify:
            report = cache.verify_cache(self.directory)
            if not report.ok:
                raise ValueError(f"cache {self.directory} failed verification:\n  " + "\n  ".join(report.problems))
        mpath = os.path.join(self.directory, cache.MANIFEST)
        if not os.path.isfile(mpath):
            raise FileNotFoundError(f"{mpath} not found: run `mixflow-bench data prepare` to completion first")
        self.manifest = cache.read_json(mpath)
        self.fields = sorted(self.manifest["fields"])
        self.flips = int(self.manifest["flips"])
        self.classes: list[str] = self.manifest["classes"]
        self.latent_shape = tuple(self.manifest["latent_shape"])
        self._shards: list[dict[str, np.ndarray]] = []
        labels = []
        for shard in self.manifest["shards"]:
            arrays = {
                name: np.load(os.path.join(self.directory, info["name"]), mmap_mode="r", allow_pickle=False)
                for name, info in shard["files"].items()
            }
            labels.append(np.asarray(arrays.pop("labels")))
            self._shards.append(arrays)
        self.labels = np.concatenate(labels) if labels else np.zeros(0, np.int64)
        counts = [s["count"] for s in self.manifest["shards"]]
        self._starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

    @property
    def encoder(self) -> str:
        return self.manifest["encoder"]

    @property
    def resolution(self) -> int:
        return int(self.manifest["resolution"])

    def __len__(self) -> int:
        return int(self._starts[-1])

    def __getitem__(self, index: int) -> tuple[dict[str, np.ndarray], int]:
        """Fields of one sample, each ``(flips, *shape)``, and its label."""
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        s = int(np.searchsorted(self._starts, index, side="right") - 1)
        local = index - self._starts[s]
        return {k: np.array(v[local]) for k, v in self._shards[s].items()}, int(self.labels[index])

    def read(self, indices: np.ndarray, orientation: np.ndarray | None = None) -> dict[str, Tensor]:
        """Fields of ``indices`` in that order as float32 (B, *shape); ``orientation``: 0/1 each."""
        indices = np.asarray(indices, dtype=np.int64)
        orientation = np.zeros_like(indices) if orientation is None else np.asarray(orientation, dtype=np.int64)
        if orientation.size and int(orientation.max()) >= self.flips:
            raise ValueError(f"orientation {int(orientation.max())} requested but the cache stores {self.flips}")
        shard_of = np.searchsorted(self._starts, indices, side="right") - 1
        out = {k: np.empty((len(indices), *self.manifest["fields"][k]["shape"]), np.float32) for k in self.fields}
        for s in np.unique(shard_of):
            sel = np.nonzero(shard_of == s)[0]
            local = indices[sel] - self._starts[s]
            order = np.argsort(local, kind="stable")  # ascending offsets read the memmap sequentially
            for k in self.fields:
                out[k][sel[order]] = self._shards[s][k][local[order], orientation[sel[order]]]
        return {k: torch.from_numpy(v) for k, v in out.items()}


def latents_from_fields(
    fields: dict[str, Tensor], seeds: list[int] | None, codec: Codec | None = None, encoder: str | None = None
) -> Tensor:
    """Model-space training latents for a batch; ``seeds`` gives one generator per sample (None: global RNG).

    ``codec`` converts stored fields when given; otherwise the named ``encoder``'s rule does
    (:func:`~mixflow_bench.models.latents.model_latent_from_stored`, scale factor included). One of them is required:
    there is no unscaled fallback.
    """
    if codec is None and encoder is None:
        raise ValueError("latents_from_fields needs the cache's codec or encoder name to know the latent scaling")
    if codec is not None:
        convert = codec.latent_from_stored
    else:
        def convert(f: dict[str, Tensor], g: torch.Generator | None) -> Tensor:
            return model_latent_from_stored(encoder, f, g)

    if seeds is None:
        return convert(fields, None)
    if codec is None and "mean" in fields and "std" in fields:  # vectorised form of the per-sample rule
        mean = fields["mean"]
        eps = torch.empty(mean.shape, dtype=torch.float32)
        gen = torch.Generator()
        for i, s in enumerate(seeds):
            gen.manual_seed(s)
            torch.randn(mean.shape[1:], generator=gen, out=eps[i])
        return latent_scale(encoder) * (mean + fields["std"] * eps.to(mean.dtype))
    outs = []
    for i, s in enumerate(seeds):
        gen = torch.Generator().manual_seed(s)
        outs.append(convert({k: v[i : i + 1] for k, v in fields.items()}, gen))
    return torch.cat(outs) if outs else torch.zeros(0)


class _PrefetchingBatches(abc.ABC):
    """Shared iteration/state logic: subclasses implement ``_make(epoch, indices) -> (x, y)``."""

    sampler: ResumableSampler
    prefetch: int

    @abc.abstractmethod
    def _make(self, epoch: int, indices: np.ndarray) -> tuple[Tensor, Tensor]:
        """The batch (latents, labels) of the dataset rows ``indices`` in ``epoch``."""

    def _positions(self) -> Iterator[tuple[int, int, tuple[int, int]]]:
        epoch, step = self.sampler.epoch, self.sampler.step
        while True:
            nxt = self.sampler.advance(epoch, step)
            yield epoch, step, nxt
            epoch, step = nxt

    def _build(self, epoch: int, step: int) -> tuple[Tensor, Tensor]:
        idx = self.sampler.rank_slice(self.sampler.global_batch(epoch, step))
        return self._make(epoch, idx)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        if self.prefetch <= 0:
            for epoch, step, nxt in self._positions():
                batch = self._build(epoch, step)
                self.sampler.epoch, self.sampler.step = nxt
                yield batch
            return
        q: queue.Queue = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()

        def produce() -> None:
            try:
                for epoch, step, nxt in self._positions():
                    if stop.is_set():
                        return
                    item = (self._build(epoch, step), nxt)
                    while not stop.is_set():
                        try:
                            q.put(item, timeout=0.1)
                            break
                        except queue.Full:
                            continue
                    if stop.is_set():
                        return
            except BaseException as exc:  # surfaced in the consumer
                while not stop.is_set():
                    try:
                        q.put((exc, None), timeout=0.1)
                        return
                    except queue.Full:
                        continue

        thread = threading.Thread(target=produce, name=PREFETCH_THREAD, daemon=True)
        thread.start()
        try:
            while True:
                batch, nxt = q.get()
                if nxt is None:
                    raise batch
                self.sampler.epoch, self.sampler.step = nxt
                yield batch
        finally:
            # Wait for the producer (at most the batch it is building). Left running, it could still be inside
            # torch when the interpreter shuts down; a daemon thread taking the GIL back then is ended with
            # pthread_exit, which aborts the process ("terminate called without an active exception"). An
            # iterator first closed during shutdown itself cannot wait: its producer may be frozen already.
            stop.set()
            if not sys.is_finalizing():
                thread.join()

    @property
    def steps_per_epoch(self) -> int:
        return self.sampler.steps_per_epoch

    def state_dict(self) -> dict[str, Any]:
        """Position after the last batch handed out (restore it, then iterate anew)."""
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sampler.load_state_dict(state)


class LatentBatches(_PrefetchingBatches):
    """Endless ``(x1, y)`` batches of training latents from a :class:`LatentDataset`, exactly resumable.

    ``hflip=None`` uses the mirrored orientation with p=1/2 when the cache stores both (SiT/RAE practice)
    and never otherwise (REPA practice); ``generator_for_latents=False`` draws SD-VAE noise from torch's
    global RNG instead (then resume is not bit-exact). Batches are in the model's latent space: ``codec``
    turns stored fields into latents when given, else the cache's encoder rule does (SD-VAE:
    ``0.18215 * (mean + std * eps)``), so training and sampling share one scaling.
    """

    def __init__(
        self,
        dataset: LatentDataset,
        global_batch_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        generator_for_latents: bool = True,
        drop_last: bool = True,
        *,
        hflip: bool | None = None,
        codec: Codec | None = None,
        prefetch: int = 2,
    ) -> None:
        if hflip and dataset.flips < 2:
            raise ValueError(f"hflip=True but cache {dataset.directory} stores only the original orientation")
        self.dataset = dataset
        self.hflip = dataset.flips == 2 if hflip is None else bool(hflip)
        self.generator_for_latents = generator_for_latents
        self.codec = codec
        self.prefetch = prefetch
        self.seed = seed
        self.sampler = ResumableSampler(len(dataset), global_batch_size, seed, rank, world_size, drop_last)

    def _make(self, epoch: int, indices: np.ndarray) -> tuple[Tensor, Tensor]:
        orient = flip_choices(self.seed, epoch, indices) if self.hflip else None
        fields = self.dataset.read(indices, orient)
        seeds = noise_seeds(self.seed, epoch, indices) if self.generator_for_latents else None
        x = latents_from_fields(fields, seeds, self.codec, None if self.codec else self.dataset.encoder)
        return x, torch.from_numpy(self.dataset.labels[indices].copy())


class PixelBatches(_PrefetchingBatches):
    """On-the-fly variant for small data sets: read, ADM-crop, flip and encode each batch with ``codec``."""

    def __init__(
        self,
        source,
        codec: Codec,
        resolution: int,
        global_batch_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        generator_for_latents: bool = True,
        drop_last: bool = True,
        *,
        hflip: bool = True,
        device: Any = None,
        prefetch: int = 1,
    ) -> None:
        from mixflow_bench.data.sources import open_source

        self.source = open_source(source) if isinstance(source, (str, os.PathLike)) else source
        self.codec, self.resolution, self.device = codec, resolution, device
        self.hflip, self.generator_for_latents, self.seed = hflip, generator_for_latents, seed
        self.prefetch = prefetch
        self.labels = np.asarray([r.label for r in self.source.records], dtype=np.int64)
        self.sampler = ResumableSampler(len(self.source), global_batch_size, seed, rank, world_size, drop_last)

    def _make(self, epoch: int, indices: np.ndarray) -> tuple[Tensor, Tensor]:
        from mixflow_bench.data.preprocess import preprocess_to_array, to_unit_tensor_batch

        orient = flip_choices(self.seed, epoch, indices) if self.hflip else np.zeros(len(indices), np.int64)
        arrays = []
        for i, f in zip(indices, orient):
            rec = self.source.records[int(i)]
            try:
                arr = preprocess_to_array(rec.read(), self.resolution)
            except Exception as exc:
                raise RuntimeError(f"cannot decode image {rec.origin}: {exc}") from exc
            arrays.append(arr[:, ::-1] if f else arr)
        x = to_unit_tensor_batch(arrays)
        if self.device is not None:
            x = x.to(self.device)
        with torch.inference_mode():
            fields = {k: v.to("cpu", torch.float32) for k, v in self.codec.encode(x).items()}
        seeds = noise_seeds(self.seed, epoch, indices) if self.generator_for_latents else None
        return latents_from_fields(fields, seeds, self.codec), torch.from_numpy(self.labels[indices])
