"""One streaming pass of an image npz through the Inception network, accumulating what the metrics need.

A background thread reads batches from the zip into pinned host buffers while the device runs the network;
only running sums (float64 mean/covariance for pool3 and the sFID map, Inception Score splits) and, when
precision/recall is asked, the pool3 features (N×2048 float32) are kept, so memory does not grow with the
image data.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from mixflow_bench.metrics.frechet import GaussianStats, MomentAccumulator
from mixflow_bench.metrics.inception import InceptionFeatures
from mixflow_bench.metrics.inception_score import InceptionScoreAccumulator
from mixflow_bench.metrics.npz_stream import NpzImageReader


class NonFiniteFeaturesError(ValueError):
    """The network produced NaN or inf features."""


@dataclass
class FeatureSummary:
    count: int
    pool_stats: GaussianStats | None = None
    spatial_stats: GaussianStats | None = None
    inception_score: float | None = None
    pool_features: np.ndarray | None = None  # N×2048 float32, only when kept
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)


def _reader_thread(
    reader: NpzImageReader,
    buffers: list[torch.Tensor],
    free: queue.Queue,
    ready: queue.Queue,
    stop: threading.Event,
) -> None:
    try:
        with reader.open_stream() as stream:
            while stream.remaining and not stop.is_set():
                idx = free.get()
                if idx is None:
                    break
                n = stream.read_into(buffers[idx].numpy())
                ready.put((idx, n))
        ready.put(None)
    except BaseException as exc:  # handed to the consumer
        ready.put(exc)


def extract(
    reader: NpzImageReader,
    net: InceptionFeatures,
    *,
    device: str | torch.device,
    batch_size: int = 250,
    pool_stats: bool = True,
    spatial_stats: bool = True,
    inception_score: bool = True,
    keep_pool: bool = False,
    limit: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> FeatureSummary:
    """Runs all images of ``reader`` (or the first ``limit``) through ``net`` on ``device``."""
    device = torch.device(device)
    total = reader.num_images if limit is None else min(limit, reader.num_images)
    if inception_score:
        problem = getattr(net, "logits_problem", None) or (
            None if net.has_logits else "they have no 1008-class output layer"
        )
        if problem:
            raise ValueError(f"no Inception Score from these Inception weights: {problem}")
    pin = device.type == "cuda"
    nbuf = 3
    buffers = [
        torch.empty((batch_size, *reader.shape[1:]), dtype=torch.uint8, pin_memory=pin) for _ in range(nbuf)
    ]
    free: queue.Queue = queue.Queue()
    ready: queue.Queue = queue.Queue()
    for i in range(nbuf):
        free.put(i)
    stop = threading.Event()
    thread = threading.Thread(target=_reader_thread, args=(reader, buffers, free, ready, stop), daemon=True)
    pool_acc = MomentAccumulator() if pool_stats else None
    sp_acc = MomentAccumulator() if spatial_stats else None
    is_acc = InceptionScoreAccumulator() if inception_score else None
    kept = np.empty((total, 2048), np.float32) if keep_pool else None
    done = 0
    t0 = time.perf_counter()
    thread.start()
    try:
        while done < total:
            item = ready.get()
            if item is None:
                break
            if isinstance(item, BaseException):
                raise item
            idx, n = item
            n = min(n, total - done)
            host = buffers[idx][:n]
            imgs = host.to(device, non_blocking=pin).permute(0, 3, 1, 2)
            if imgs.data_ptr() != host.data_ptr():
                if pin:  # the buffer may be refilled once its copy has landed
                    ev = torch.cuda.Event()
                    ev.record()
                    ev.synchronize()
                free.put(idx)
                idx = None
            out = net(imgs, spatial=spatial_stats, logits=inception_score)
            if idx is not None:  # same memory as the host buffer: release it only after use
                free.put(idx)
            if not bool(torch.isfinite(out.pool).all()) or (
                out.spatial is not None and not bool(torch.isfinite(out.spatial).all())
            ):
                raise NonFiniteFeaturesError(
                    f"{reader.path}: NaN or inf Inception features in images {done}..{done + n - 1}"
                )
            if pool_acc is not None:
                pool_acc.update(out.pool)
            if sp_acc is not None:
                sp_acc.update(out.spatial)
            if is_acc is not None:
                is_acc.update(out.logits)
            if kept is not None:
                kept[done : done + n] = out.pool.cpu().numpy()
            done += n
            if progress is not None:
                progress(n)
    finally:
        stop.set()
        free.put(None)
        thread.join(timeout=30)
    if done != total:
        raise ValueError(f"{reader.path}: read {done} images, expected {total}")
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    summary = FeatureSummary(count=done, seconds=time.perf_counter() - t0)
    if pool_acc is not None:
        summary.pool_stats = pool_acc.finalize()
    if sp_acc is not None:
        summary.spatial_stats = sp_acc.finalize()
    if is_acc is not None:
        summary.inception_score = is_acc.finalize()
    summary.pool_features = kept
    return summary
