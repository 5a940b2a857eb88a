"""Sampling at scale: per-sample seeding, sharded resumable generation, deterministic ADM npz output."""

from mixflow_bench.sampling.npz import write_npz, write_npz_stream
from mixflow_bench.sampling.quantize import quantize
from mixflow_bench.sampling.seeding import initial_noise, sample_labels, step_noise
from mixflow_bench.sampling.shards import Generator, merge_shards, sample_to_npz, shard_dir_for

__all__ = [
    "Generator",
    "initial_noise",
    "merge_shards",
    "quantize",
    "sample_labels",
    "sample_to_npz",
    "shard_dir_for",
    "step_noise",
    "write_npz",
    "write_npz_stream",
]
