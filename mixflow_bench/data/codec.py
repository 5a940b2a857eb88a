"""The encoder interface the data pipeline needs, and name resolution through the model zoo.

Any object with ``latent_shape``, ``encode(images) -> dict[str, Tensor]`` and
``latent_from_stored(fields, generator) -> Tensor`` works; named encoders resolve lazily through
``mixflow_bench.models.autoencoders.build_codec`` so importing this package never loads torch models.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

ENCODER_NAMES = ("sd-vae-ft-ema", "sd-vae-ft-mse", "rae-dinov2-b")


@runtime_checkable
class Codec(Protocol):
    """Pixels in [0, 1] -> stored per-sample fields -> training latent."""

    latent_shape: tuple[int, ...]

    def encode(self, images: Tensor) -> dict[str, Tensor]: ...

    def latent_from_stored(self, fields: dict[str, Tensor], generator: torch.Generator | None) -> Tensor: ...


def build_named_codec(
    name: str,
    resolution: int,
    *,
    random_init: bool = False,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    weights: Any = None,
) -> Codec:
    """Build a zoo encoder by name (``sd-vae-ft-ema``, ``sd-vae-ft-mse``, ``rae-dinov2-b``)."""
    try:
        from mixflow_bench.models.autoencoders import build_codec
    except ImportError as exc:  # the zoo module lands in another branch
        raise RuntimeError(
            f"encoder {name!r} needs mixflow_bench.models.autoencoders.build_codec, which this build lacks"
        ) from exc
    return build_codec(name, resolution, weights=weights, random_init=random_init, device=device, dtype=dtype)


def default_latent_from_stored(fields: dict[str, Tensor], generator: torch.Generator | None) -> Tensor:
    """Codec-free fallback: SD-VAE ``mean + std * eps`` (raw posterior sample, unscaled); RAE ``latent``."""
    if "latent" in fields:
        return fields["latent"]
    if "mean" in fields and "std" in fields:
        mean, std = fields["mean"], fields["std"]
        eps = torch.randn(mean.shape, generator=generator, dtype=torch.float32).to(mean.dtype)
        return mean + std * eps
    raise KeyError(f"stored fields {sorted(fields)} hold neither 'latent' nor 'mean'+'std'")
