"""Resumable, DDP-sharded batch streams over a latent cache, and the on-the-fly pixel mode."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from test_data_stub_codec import StubCodec, write_image_tree
from tolerance import assert_close_to_scale

from mixflow_bench.data import (
    LatentBatches,
    LatentDataset,
    PixelBatches,
    PrepareSettings,
    ResumableSampler,
    finalize_manifest,
    open_source,
    prepare_shards,
)

pytestmark = pytest.mark.float_sensitive  # also run with OMP_NUM_THREADS=1 in CI (.ci/run)

RES = 32


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> tuple[Path, Path]:
    """A tree without corrupt files (cache index == source index) and its cache (both orientations)."""
    base = tmp_path_factory.mktemp("ld")
    write_image_tree(base / "src", corrupt=False)
    prepare_shards(
        open_source(base / "src"),
        StubCodec(RES),
        str(base / "cache"),
        PrepareSettings("sd-vae-ft-ema", RES, 4, 2),  # the stub scales like SD-VAE (0.18215)
        show_progress=False,
    )
    finalize_manifest(str(base / "cache"))
    return base / "src", base / "cache"


def _take(it, n):
    return [next(it) for _ in range(n)]


def _assert_same(a, b):
    assert len(a) == len(b)
    for (xa, ya), (xb, yb) in zip(a, b):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


@pytest.mark.parametrize("prefetch", [0, 2])
def test_resumed_loader_sees_same_batches(clean, prefetch) -> None:
    ds = LatentDataset(clean[1])
    codec = StubCodec(RES)
    ref = _take(
        iter(LatentBatches(ds, 4, seed=7, codec=codec, prefetch=prefetch)), 9
    )  # 2 steps/epoch: 4+ epochs
    first = LatentBatches(ds, 4, seed=7, codec=codec, prefetch=prefetch)
    head = _take(iter(first), 5)
    state = first.state_dict()
    assert (state["epoch"], state["step"]) == (2, 1)
    resumed = LatentBatches(LatentDataset(clean[1]), 4, seed=7, codec=codec, prefetch=prefetch)
    resumed.load_state_dict(state)
    _assert_same(head + _take(iter(resumed), 4), ref)
    other = _take(iter(LatentBatches(ds, 4, seed=8, codec=codec, prefetch=prefetch)), 2)
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(other, ref[:2]))


def test_resume_refuses_different_settings(clean) -> None:
    ds = LatentDataset(clean[1])
    state = LatentBatches(ds, 4, seed=7).state_dict()
    with pytest.raises(ValueError, match="seed"):
        LatentBatches(ds, 4, seed=9).load_state_dict(state)


@pytest.mark.parametrize("world", [2, 4])
def test_rank_slices_partition_global_batch(clean, world) -> None:
    ds = LatentDataset(clean[1])
    single = _take(iter(LatentBatches(ds, 8, seed=3, prefetch=0)), 3)
    per_rank = [
        _take(iter(LatentBatches(ds, 8, seed=3, rank=r, world_size=world, prefetch=0)), 3)
        for r in range(world)
    ]
    for step in range(3):
        x = torch.cat([per_rank[r][step][0] for r in range(world)])
        y = torch.cat([per_rank[r][step][1] for r in range(world)])
        assert torch.equal(x, single[step][0]) and torch.equal(y, single[step][1])


def test_epoch_order_is_a_seeded_permutation() -> None:
    s = ResumableSampler(10, 3, seed=5, drop_last=False)
    epoch0 = [next(iter(s)) for _ in range(s.steps_per_epoch)]
    assert [len(b) for b in epoch0] == [3, 3, 3, 1]
    assert sorted(np.concatenate(epoch0).tolist()) == list(range(10))
    want = np.random.Generator(np.random.PCG64(np.random.SeedSequence([5, 0]))).permutation(10)
    np.testing.assert_array_equal(np.concatenate(epoch0), want)
    assert (s.epoch, s.step) == (1, 0)


def test_posterior_sample_and_flip_choice(clean) -> None:
    """x = codec(mean + std * eps) per sample; orientations chosen about half the time, none when disabled."""
    ds = LatentDataset(clean[1])
    b = LatentBatches(ds, 9, seed=11, prefetch=0)  # no codec: the cache's encoder rule, 0.18215 (mean + std eps)
    x, y = next(iter(b))
    idx = b.sampler.global_batch(0, 0)
    from mixflow_bench.data.loader import flip_choices, noise_seeds

    orient = flip_choices(11, 0, idx)
    for i, (j, o, s) in enumerate(zip(idx, orient, noise_seeds(11, 0, idx))):
        fields, label = ds[int(j)]
        eps = torch.randn((1, *fields["mean"].shape[1:]), generator=torch.Generator().manual_seed(s))
        want = 0.18215 * (torch.from_numpy(fields["mean"][o]) + torch.from_numpy(fields["std"][o]) * eps[0])
        assert_close_to_scale(x[i], want, ulps=8)  # float32: one multiply-add, maybe fused
        assert y[i] == label
    many = flip_choices(0, 0, np.arange(20000))
    assert 0.48 < many.mean() < 0.52
    no_flip = LatentBatches(ds, 9, seed=11, hflip=False, prefetch=0)
    assert no_flip.hflip is False


def test_pixel_batches_equal_cached_batches(clean) -> None:
    codec = StubCodec(RES)
    cached = _take(iter(LatentBatches(LatentDataset(clean[1]), 4, seed=2, codec=codec, prefetch=0)), 3)
    pixels = _take(iter(PixelBatches(str(clean[0]), codec, RES, 4, seed=2, prefetch=0)), 3)
    for (xa, ya), (xb, yb) in zip(cached, pixels):
        assert torch.equal(ya, yb)
        torch.testing.assert_close(xa, xb, rtol=1e-5, atol=1e-6)
