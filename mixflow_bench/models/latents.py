"""Model-space latents: the one source of truth for latent scaling.

An encoder's raw latent (an SD-VAE posterior sample, or RAE's normalised DINOv2 features) times the encoder's
scale is the latent the generators train and sample in; a latent cache stores the fields this is computed from.
"""

from __future__ import annotations

import torch
from torch import Tensor

SD_VAE_SCALE = 0.18215  # Stable Diffusion's KL-f8 scale factor: model latents are 0.18215 * posterior samples
LATENT_SCALE: dict[str, float] = {"sd-vae-ft-ema": SD_VAE_SCALE, "sd-vae-ft-mse": SD_VAE_SCALE, "rae-dinov2-b": 1.0}
# Per-element std of model-space training latents that a correctly scaled cache of real images shows
# (SD-VAE x 0.18215 on ImageNet: about 0.8-1.0; RAE latents are normalised by stat.pt: about 1). Unscaled SD-VAE
# posterior samples sit near 5, far outside.
EXPECTED_LATENT_STD: dict[str, tuple[float, float]] = {
    "sd-vae-ft-ema": (0.4, 2.0),
    "sd-vae-ft-mse": (0.4, 2.0),
    "rae-dinov2-b": (0.4, 2.0),
}


def latent_scale(encoder: str) -> float:
    """The factor from an encoder's raw latent (SD-VAE posterior sample) to the model's latent space."""
    if encoder not in LATENT_SCALE:
        raise ValueError(
            f"no latent scaling is known for encoder {encoder!r} (known: {', '.join(LATENT_SCALE)}); pass its codec"
        )
    return LATENT_SCALE[encoder]


def model_latent_from_stored(
    encoder: str, fields: dict[str, Tensor], generator: torch.Generator | None = None
) -> Tensor:
    """The model-space training latent of stored cache fields, for a named encoder.

    SD-VAE caches store the unscaled posterior ``{"mean", "std"}``: the latent is
    ``LATENT_SCALE[encoder] * (mean + std * eps)``, ``eps ~ N(0, I)`` from ``generator``. RAE caches store the
    normalised ``{"latent"}`` itself. Every codec's ``latent_from_stored`` and the codec-free training path go
    through here, so that training sees the same space that sampling decodes from.
    """
    scale = latent_scale(encoder)
    if "latent" in fields:  # stored already in the model's space (RAE)
        return fields["latent"]
    missing = {"mean", "std"} - set(fields)
    if missing:
        raise KeyError(f"stored {encoder} fields lack {sorted(missing)} (have {sorted(fields)})")
    mean, std = fields["mean"], fields["std"]
    gen_device = generator.device if generator is not None else mean.device
    eps = torch.randn(mean.shape, generator=generator, device=gen_device, dtype=torch.float32)
    return scale * (mean + std * eps.to(device=mean.device, dtype=mean.dtype))


def check_latent_std(encoder: str, std: float, mode: str = "error") -> str:
    """Compare the std of a batch of model-space latents with the encoder's expected range.

    Returns a one-line report; raises ``ValueError`` when it is out of range and ``mode == "error"``.
    """
    lo, hi = EXPECTED_LATENT_STD.get(encoder, (0.0, float("inf")))
    line = f"latent check: batch std {std:.4f} for {encoder} (expected {lo}-{hi} in the model's space)"
    if lo <= std <= hi or mode == "off":
        return line
    message = (
        f"{line}: OUT OF RANGE. The cache's latents are not in the space the model samples in (a missing or "
        f"double scale factor, or an encoder with other weights); set train.latent_check: warn to train anyway"
    )
    if mode == "error":
        raise ValueError(message)
    return message
