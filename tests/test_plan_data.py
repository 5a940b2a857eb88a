"""`reproduce --plan`'s data row: the cache size it announces equals what `data prepare` writes, the stored
numbers per image equal the real encoders' outputs, and the status follows the cache's manifest."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from test_data_stub_codec import write_image_tree

from mixflow_bench.data import PrepareSettings, finalize_manifest, open_source, prepare_shards
from mixflow_bench.data.codec import build_named_codec
from mixflow_bench.pipeline.estimate import latent_cache_estimate, latent_values_per_image
from mixflow_bench.pipeline.reproduce import data_row
from mixflow_bench.recipes.loader import load_recipe


def test_estimated_size_equals_a_prepared_cache(tmp_path):
    root = tmp_path / "train"
    write_image_tree(root, corrupt=False)
    source = open_source(root)
    codec = build_named_codec("sd-vae-ft-ema", 256, random_init=True)
    out = tmp_path / "cache"
    prepare_shards(source, codec, str(out), PrepareSettings("sd-vae-ft-ema", 256, 4, 2), show_progress=False)
    manifest = finalize_manifest(str(out))
    arrays = [np.load(f, mmap_mode="r") for f in sorted(out.glob("*.npy"))]
    stored = sum(a.nbytes for a in arrays if a.dtype.kind == "f")
    num = manifest["num_samples"]
    assert num > 0 and stored > 0
    assert stored == latent_cache_estimate("sd-vae-ft-ema", 256, num_images=num)[0]


def test_values_per_image_equal_the_encoders_outputs():
    images = torch.rand(1, 3, 256, 256)
    for name in ("sd-vae-ft-ema", "rae-dinov2-b"):
        fields = build_named_codec(name, 256, random_init=True).encode(images)
        assert sum(v[0].numel() for v in fields.values()) == latent_values_per_image(name, 256), name


def test_data_row_status_follows_the_cache_manifest(tmp_path):
    cache = tmp_path / "latents"
    recipe = load_recipe("sit-xl-256", {"data": {"path": str(cache)}})
    status, what, path, _, hours = data_row(recipe)
    assert status == "missing" and path == str(cache) and hours is not None and hours > 0
    cache.mkdir()
    (cache / "manifest.json").write_text("{}")
    assert data_row(recipe)[0] == "done"
    assert data_row(load_recipe("tiny-digits")) is None  # no latent cache to prepare
    assert Path(path).name == "latents"
