"""FD-DINOv2 (dgm-eval / EDM2 protocol): Fréchet distance of DINOv2 ViT-L/14 CLS features.

Images are scaled to [0, 1], resized to 224×224 with antialiased bicubic interpolation, normalised with the
ImageNet mean/std, and the final-norm CLS token (``pooler_output`` of ``transformers.Dinov2Model``) is the
feature. Weights: a local Hugging Face folder (e.g. a copy of ``facebook/dinov2-large``) or the artifact name
``dinov2-vit-l`` (that repository's files through the artifact cache).
Not part of ADM's evaluator; not checked against published FD-DINOv2 values.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from mixflow_bench.metrics.frechet import GaussianStats, MomentAccumulator, frechet_distance
from mixflow_bench.metrics.npz_stream import NpzImageReader

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def load_dinov2(weights: str | os.PathLike | None, device: str) -> torch.nn.Module:
    """The DINOv2 model from a local Hugging Face folder or the ``dinov2-vit-l`` artifact; a clear error else."""
    from mixflow_bench.hub.registry import FD_DINOV2_ARTIFACT

    if weights is not None and str(weights) == FD_DINOV2_ARTIFACT:
        from mixflow_bench.hub import fetch

        weights = fetch(FD_DINOV2_ARTIFACT, progress=False).parent  # model.safetensors + config.json
    if weights is None or not Path(weights).is_dir():
        raise FileNotFoundError(
            "FD-DINOv2 needs DINOv2 ViT-L/14 weights as a local Hugging Face folder (config.json + weights, "
            f"e.g. facebook/dinov2-large) or the artifact name {FD_DINOV2_ARTIFACT}; got {weights!r}"
        )
    from transformers import Dinov2Model

    return Dinov2Model.from_pretrained(str(weights)).to(device).eval()


@torch.no_grad()
def dinov2_stats(
    path: str | os.PathLike, model: torch.nn.Module, device: str, batch_size: int = 100
) -> GaussianStats:
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
    acc = MomentAccumulator()
    with NpzImageReader(path) as reader:
        for batch in reader.iter_batches(batch_size):
            x = torch.from_numpy(batch).to(device).permute(0, 3, 1, 2).float() / 255
            x = torch.nn.functional.interpolate(x, size=(224, 224), mode="bicubic", antialias=True)
            feats = model(pixel_values=(x - mean) / std).pooler_output.float()
            if not bool(torch.isfinite(feats).all()):
                raise ValueError(f"{path}: NaN or inf DINOv2 features")
            acc.update(feats)
    return acc.finalize()


def fd_dinov2(
    samples: str | os.PathLike,
    reference: str | os.PathLike,
    weights: str | os.PathLike | None,
    device: str = "cpu",
    batch_size: int = 100,
    method: str = "scipy",
) -> float:
    """FD-DINOv2 between the images (``arr_0``) of two npz files."""
    model = load_dinov2(weights, device)
    a = dinov2_stats(samples, model, device, batch_size)
    b = dinov2_stats(reference, model, device, batch_size)
    return frechet_distance(a, b, method, device)
