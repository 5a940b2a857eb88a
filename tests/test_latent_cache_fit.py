"""Training reads a latent cache in the model's space (one scaling rule), and only a cache that fits the recipe.

The SD-VAE rule is checked against its formula, ``0.18215 * (mean + std * eps)`` with the per-sample eps, and
against the codec path (the stub codec applies the same factor); the std invariant against the measured ratio of
unscaled to scaled latents (1 / 0.18215 = 5.49).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_data_stub_codec import StubCodec, write_image_tree

from mixflow_bench.data import LatentBatches, LatentDataset, PrepareSettings, finalize_manifest, open_source
from mixflow_bench.data.compatibility import CacheMismatchError, cache_problems, check_cache_fits_recipe
from mixflow_bench.data.loader import flip_choices, noise_seeds
from mixflow_bench.data.prepare import prepare_shards
from mixflow_bench.models.latents import SD_VAE_SCALE, check_latent_std, latent_scale, model_latent_from_stored
from mixflow_bench.pipeline.tasks import _training_batches
from mixflow_bench.recipes.loader import load_recipe

RES = 32


def _cache(base, encoder: str, flips: int = 2, weights=None):
    write_image_tree(base / "src", corrupt=False)
    prepare_shards(
        open_source(base / "src"),
        StubCodec(RES),
        str(base / "cache"),
        PrepareSettings(encoder, RES, 4, flips, encoder_weights=weights),
        show_progress=False,
    )
    finalize_manifest(str(base / "cache"))
    return base / "cache"


@pytest.fixture(scope="module")
def sd_cache(tmp_path_factory):
    return _cache(tmp_path_factory.mktemp("sd"), "sd-vae-ft-ema")


def _recipe(cache, name: str = "sit-b-256", **data):
    return load_recipe(name, {"data": {"path": str(cache), "resolution": RES, **data}, "train": {"batch_size": 8}})


def test_training_batches_are_scaled_like_sampling(sd_cache) -> None:
    recipe = _recipe(sd_cache)
    batches = _training_batches(recipe, 0, 1)  # the path train_task takes: no codec
    x, y = batches._build(0, 0)
    ds = LatentDataset(sd_cache)
    idx = batches.sampler.global_batch(0, 0)
    orient = flip_choices(recipe.train.seed, 0, idx)
    for i, (j, o, s) in enumerate(zip(idx, orient, noise_seeds(recipe.train.seed, 0, idx))):
        fields, _ = ds[int(j)]
        eps = torch.randn((1, *fields["mean"].shape[1:]), generator=torch.Generator().manual_seed(s))[0]
        want = SD_VAE_SCALE * (torch.from_numpy(fields["mean"][o]) + torch.from_numpy(fields["std"][o]) * eps)
        torch.testing.assert_close(x[i], want, rtol=1e-6, atol=1e-7)
    with_codec = LatentBatches(ds, recipe.train.batch_size, recipe.train.seed, codec=StubCodec(RES), prefetch=0)
    torch.testing.assert_close(with_codec._build(0, 0)[0], x, rtol=1e-6, atol=1e-7)


def test_one_scaling_rule_and_the_std_invariant() -> None:
    g = torch.Generator().manual_seed(0)
    fields = {"mean": torch.randn(64, 4, 4, 4, generator=g) * 4.5, "std": torch.full((64, 4, 4, 4), 0.5)}
    scaled = model_latent_from_stored("sd-vae-ft-mse", fields, torch.Generator().manual_seed(1))
    raw = fields["mean"] + fields["std"] * torch.randn(64, 4, 4, 4, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(scaled, SD_VAE_SCALE * raw)
    assert latent_scale("rae-dinov2-b") == 1.0
    latent = {"latent": torch.randn(2, 768, 16, 16)}
    assert model_latent_from_stored("rae-dinov2-b", latent) is latent["latent"]
    assert "0.9" in check_latent_std("sd-vae-ft-ema", 0.9)
    with pytest.raises(ValueError, match=r"5\.49.*OUT OF RANGE"):
        check_latent_std("sd-vae-ft-ema", 1.0 / SD_VAE_SCALE)  # unit-std latents left unscaled
    assert "OUT OF RANGE" in check_latent_std("sd-vae-ft-ema", 5.49, mode="warn")
    with pytest.raises(ValueError, match="no latent scaling is known for encoder 'stub'"):
        model_latent_from_stored("stub", fields)


def test_training_refuses_unscaled_latents(sd_cache, tmp_path) -> None:
    """A cache whose model-space latents have the unscaled std stops training before the first step."""
    from mixflow_bench.pipeline.tasks import check_first_batch

    recipe = _recipe(sd_cache)
    batches = _training_batches(recipe, 0, 1)
    batches.codec = type("Unscaled", (), {"latent_from_stored": lambda self, f, g: f["mean"] * 50})()
    with pytest.raises(ValueError, match="OUT OF RANGE"):
        check_first_batch(recipe, batches, tmp_path)


def test_cache_that_does_not_fit_is_refused(sd_cache, tmp_path) -> None:
    ds = LatentDataset(sd_cache)
    assert cache_problems(ds.manifest, _recipe(sd_cache)) == []
    with pytest.raises(CacheMismatchError, match=r"encoder: cache 'sd-vae-ft-ema', recipe 'sd-vae-ft-mse'"):
        check_cache_fits_recipe(ds, _recipe(sd_cache, "repa-256"))
    problems = cache_problems(ds.manifest, _recipe(sd_cache, resolution=64), num_classes=1000)
    assert any(p.startswith("resolution: cache 32, recipe 64") for p in problems)
    assert any(p.startswith("classes: cache") and p.endswith("the model 1000 (labels would not match)")
               for p in problems)  # fmt: skip
    with pytest.raises(CacheMismatchError, match="encoder weights: the cache was encoded with weights"):
        check_cache_fits_recipe(
            type("D", (), {"manifest": {**ds.manifest, "encoder_weights": {"sha256": "a" * 64}},
                           "directory": "c"})(),  # fmt: skip
            _recipe(sd_cache), None, "b" * 64,
        )
    single = _cache(tmp_path / "one", "sd-vae-ft-mse", flips=1, weights={"random_init": True, "sha256": ""})
    repa = _recipe(single, "repa-256")
    assert repa.data.hflip is False  # REPA trains without flips
    problems = cache_problems(LatentDataset(single).manifest, repa)
    assert problems == ["encoder weights: the cache was encoded with a randomly initialised encoder"]
    sit = cache_problems(LatentDataset(single).manifest, _recipe(single, encoder="sd-vae-ft-mse"))
    assert any("flips: the recipe trains with horizontal flips" in p for p in sit)


def test_data_prepare_follows_the_recipe() -> None:
    from mixflow_bench.cli.data_cmd import _settings_from_recipe

    assert _settings_from_recipe("repa-256", None, None, None, None) == (
        "sd-vae-ft-mse", 256, "none", "data/latents/imagenet256-sd-vae-ft-mse"
    )
    assert _settings_from_recipe("sit-xl-256", None, None, None, None)[2] == "both"
    import click

    with pytest.raises(click.ClickException, match="--resolution 512 contradicts recipe repa-256"):
        _settings_from_recipe("repa-256", None, 512, None, None)


def test_plan_data_row_follows_flips() -> None:
    from mixflow_bench.pipeline.reproduce import data_row

    sit, repa = data_row(load_recipe("sit-xl-256")), data_row(load_recipe("repa-256"))
    assert "original + mirror" in sit[1] and "original only" in repa[1]
    assert np.isclose(sit[4], 2 * repa[4])  # half the images to encode without flips
