"""The encoder interface the data pipeline needs, and name resolution through the model zoo.

Any object with ``latent_shape``, ``encode(images) -> dict[str, Tensor]`` and
``latent_from_stored(fields, generator) -> Tensor`` works (named encoders implement it with
:func:`mixflow_bench.models.latents.model_latent_from_stored`, which holds the latent scaling); named encoders
resolve lazily through ``mixflow_bench.models.autoencoders.build_codec`` so importing this package never loads
torch models.
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
    weights: dict[str, Any] | None = None,
) -> Codec:
    """Build a zoo encoder by name (``sd-vae-ft-ema``, ``sd-vae-ft-mse``, ``rae-dinov2-b``); the weight files
    ``weights`` does not give are fetched from the hub (none with ``random_init``)."""
    from mixflow_bench.models.autoencoders import build_codec, weight_artifacts

    files = dict(weights or {})
    for key, artifact in weight_artifacts(name, resolution).items():
        if not random_init and files.get(key) is None:
            from mixflow_bench.hub import fetch

            files[key] = fetch(artifact)
    return build_codec(name, resolution, weights=files, random_init=random_init, device=device, dtype=dtype)
