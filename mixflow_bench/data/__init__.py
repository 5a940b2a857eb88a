"""Training data: image sources, ADM preprocessing, sharded latent caches and resumable batch streams."""

from mixflow_bench.data.cache import VerifyReport, verify_cache
from mixflow_bench.data.loader import LatentBatches, LatentDataset, PixelBatches, ResumableSampler
from mixflow_bench.data.prepare import (
    PrepareSettings,
    finalize_manifest,
    prepare_shards,
    rank_from_env,
    shards_for_rank,
)
from mixflow_bench.data.preprocess import adm_center_crop, decode_rgb
from mixflow_bench.data.sources import ImageSource, open_source

__all__ = [
    "ImageSource",
    "LatentBatches",
    "LatentDataset",
    "PixelBatches",
    "PrepareSettings",
    "ResumableSampler",
    "VerifyReport",
    "adm_center_crop",
    "decode_rgb",
    "finalize_manifest",
    "open_source",
    "prepare_shards",
    "rank_from_env",
    "shards_for_rank",
    "verify_cache",
]
