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
}
ASSUMPTIONS = (
    "one H100; throughput per model assumed from GFLOPs at ~35% of bf16 peak (ASSUMED_FORWARD_PER_S); "
    "sampling NFE x images (x2 with guidance); training 3 forward-equivalents per image; decoding and "
    "evaluation not counted"
)


def sampling_nfe(sample: Any) -> int:
    """Network evaluations per image for a SampleSection (dopri5 assumed ~ 2 x steps)."""
    steps = sample.steps
    nfe = {"sde": steps, "euler": steps, "heun": 2 * steps, "dopri5": 2 * steps, "rae-euler": steps - 1}[sample.sampler]
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
