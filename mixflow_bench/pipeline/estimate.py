"""Rough GPU-hour estimates for ``reproduce --plan``.

An ESTIMATE, not a measurement: network evaluations (NFE, doubled for guidance that runs two models or a doubled
batch) times images, divided by an assumed throughput of forward passes per second on one H100 in bf16/TF32. The
throughputs below are order-of-magnitude assumptions scaled from the models' GFLOPs (SiT-XL/2 119 GFLOPs per
forward at 256 px) at ~35 % of an H100's dense bf16 peak; training steps are costed as 3 forward passes per image.
"""

from __future__ import annotations

from typing import Any

# model name -> assumed forward passes (images) per second on one H100
ASSUMED_FORWARD_PER_S: dict[str, float] = {
    "sit-b-2": 12000.0,
    "sit-xl-2": 2800.0,
    "sit-xl-2-512": 600.0,
    "repa-sit-xl-2": 2800.0,
    "rae-dith-xl-256": 2000.0,
    "rae-dith-xl-512": 450.0,
    "rae-dith-s-256": 15000.0,
    "rae-dith-s-512": 3500.0,
    # κ-FC mixed-source SongUNets: 21.2 / 41.9 GMACs per forward (torch FlopCounterMode), scaled from SiT-XL/2
    "mixed-source-cifar10": 15700.0,
    "mixed-source-ffhq-64": 7950.0,
    "mixed-source-afhqv2-64": 7950.0,
}
# rk45 NFE is adaptive: assumed 125 per image (the κ-FC paper's mean NFE on CIFAR-10 is 124.7)
ASSUMED_RK45_NFE = 125
ASSUMPTIONS = (
    "one H100; throughput per model assumed from GFLOPs at ~35% of bf16 peak (ASSUMED_FORWARD_PER_S); "
    "sampling NFE x images (x2 with guidance); training 3 forward-equivalents per image; decoding and "
    "evaluation not counted"
)


def sampling_nfe(sample: Any) -> int:
    """Network evaluations per image for a SampleSection (dopri5 assumed ~ 2 x steps)."""
    steps = sample.steps
    nfe = {"sde": steps, "euler": steps, "heun": 2 * steps, "dopri5": 2 * steps, "rae-euler": steps - 1,
           "manual-heun": 2 * steps - 1, "rk45": ASSUMED_RK45_NFE}[sample.sampler]
    if sample.guidance.kind != "none" and not (sample.guidance.kind == "cfg" and sample.guidance.scale == 1.0):
        nfe *= 2
    return nfe


def gpu_hours_sampling(model: str, sample: Any) -> float | None:
    rate = ASSUMED_FORWARD_PER_S.get(model)
    if rate is None:
        return None
    return sampling_nfe(sample) * sample.num / rate / 3600.0


def gpu_hours_training(model: str, train: Any) -> float | None:
    rate = ASSUMED_FORWARD_PER_S.get(model)
    if rate is None:
        return None
    return 3.0 * train.steps * train.batch_size / rate / 3600.0


IMAGENET_TRAIN_IMAGES = 1_281_167
# fp32 images/s of one encoder pass (one orientation), measured by benchmarks/bench_data.py on an H100 with random
# weights of the real encoders, batch 64 (benchmarks/README.md, 2026-11-22)
MEASURED_ENCODE_PER_S: dict[tuple[str, int], float] = {
    ("sd-vae", 256): 442.9,
    ("sd-vae", 512): 103.2,
    ("rae-dinov2-b", 256): 922.7,
    ("rae-dinov2-b", 512): 191.1,
}


def latent_values_per_image(encoder: str, resolution: int) -> int | None:
    """Stored numbers per image and orientation: SD-VAE keeps its posterior mean and std (2 x 4 x H/8 x W/8),
    RAE the normalised DINOv2-B features (768 x H/16 x W/16)."""
    if encoder.startswith("sd-vae"):
        return 2 * 4 * (resolution // 8) ** 2
    if encoder == "rae-dinov2-b":
        return 768 * (resolution // 16) ** 2
    return None


def latent_cache_estimate(
    encoder: str, resolution: int, num_images: int = IMAGENET_TRAIN_IMAGES, flips: int = 2, bytes_per_value: int = 4
) -> tuple[float, float | None] | None:
    """(bytes on disk, encoding GPU-hours on one H100) of a ``data prepare`` cache; None for an unknown encoder.

    Defaults are ``data prepare``'s: ImageNet-1k train, original + mirrored, float32 (float16 halves the bytes).
    """
    values = latent_values_per_image(encoder, resolution)
    if values is None:
        return None
    family = "sd-vae" if encoder.startswith("sd-vae") else encoder
    rate = MEASURED_ENCODE_PER_S.get((family, resolution))
    hours = None if rate is None else num_images * flips / rate / 3600.0
    return float(num_images) * flips * values * bytes_per_value, hours
