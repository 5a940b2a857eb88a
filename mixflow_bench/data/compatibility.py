"""Does a latent cache fit the recipe that trains on it? Checked before the first training step.

A cache records how it was made (encoder, resolution, orientations, classes, and a fingerprint of the encoder's
weights). Training on a cache made otherwise than the recipe says would run for days and produce a wrong model,
so every mismatch is refused with one line naming the cache, the field, both values and the fix.
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch

from mixflow_bench.errors import UserError


def encoder_weights_fingerprint(codec: Any) -> str:
    """sha256 over the encoding half of a codec's weights (every state-dict entry but ``decoder.*``).

    Computed from the tensors, not the files, so that the same weights served in different file layouts or key
    namings give the same fingerprint. Non-module codecs (test stubs) have none: ``""``.
    """
    if not isinstance(codec, torch.nn.Module):
        return ""
    h = hashlib.sha256()
    for key, value in sorted(codec.state_dict().items()):
        if key.startswith("decoder."):
            continue
        h.update(key.encode())
        h.update(str(tuple(value.shape)).encode())
        h.update(value.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


def encoder_weights_record(codec: Any, random_init: bool) -> dict[str, Any]:
    """What ``data prepare`` stores about the encoder's weights."""
    return {"random_init": bool(random_init), "sha256": "" if random_init else encoder_weights_fingerprint(codec)}


class CacheMismatchError(UserError, ValueError):
    """A latent cache that the recipe must not train on."""


def cache_problems(manifest: dict[str, Any], recipe: Any, num_classes: int | None = None) -> list[str]:
    """Every way the cache (its manifest) differs from what the recipe trains on; empty when it fits."""
    data = recipe.data
    problems: list[str] = []
    if data.encoder and manifest.get("encoder") != data.encoder:
        problems.append(f"encoder: cache {manifest.get('encoder')!r}, recipe {data.encoder!r}")
    if data.resolution and int(manifest.get("resolution", 0)) != int(data.resolution):
        problems.append(f"resolution: cache {manifest.get('resolution')}, recipe {data.resolution}")
    if data.hflip and int(manifest.get("flips", 1)) < 2:
        problems.append(
            "flips: the recipe trains with horizontal flips (data.hflip: true) but the cache stores only the "
            "original orientation (prepare it with --flips both)"
        )
    classes = manifest.get("classes") or []
    if num_classes is not None and len(classes) != num_classes:
        problems.append(f"classes: cache has {len(classes)}, the model {num_classes} (labels would not match)")
    weights = manifest.get("encoder_weights") or {}
    if weights.get("random_init"):
        problems.append("encoder weights: the cache was encoded with a randomly initialised encoder")
    return problems


def check_cache_fits_recipe(
    dataset: Any, recipe: Any, num_classes: int | None = None, encoder_fingerprint: str | None = None
) -> None:
    """Raise :class:`CacheMismatchError` (one line per problem) unless the cache fits the recipe.

    ``encoder_fingerprint``: the fingerprint of the encoder weights the recipe resolves now; compared with the
    one the cache recorded when both exist.
    """
    manifest = dataset.manifest
    problems = cache_problems(manifest, recipe, num_classes)
    recorded = (manifest.get("encoder_weights") or {}).get("sha256")
    if encoder_fingerprint and recorded and encoder_fingerprint != recorded:
        problems.append(
            f"encoder weights: the cache was encoded with weights {recorded[:12]}…, "
            f"the recipe's {recipe.data.encoder} resolves to {encoder_fingerprint[:12]}…"
        )
    if problems:
        raise CacheMismatchError(
            f"latent cache {dataset.directory} does not fit recipe {recipe.name}: "
            + "; ".join(problems)
            + ". Prepare a matching cache with `mixflow-bench data prepare --recipe "
            + f"{recipe.name} ...` or point data.path at one."
        )


__all__ = [
    "CacheMismatchError",
    "cache_problems",
    "check_cache_fits_recipe",
    "encoder_weights_fingerprint",
    "encoder_weights_record",
]
