"""The generators and latent codecs of the benchmark (registry in :mod:`mixflow_bench.models.zoo`)."""

from mixflow_bench.models.autoencoders import LatentCodec, build_codec
from mixflow_bench.models.zoo import ZOO, build_model, get_spec, list_models

__all__ = ["ZOO", "LatentCodec", "build_codec", "build_model", "get_spec", "list_models"]
