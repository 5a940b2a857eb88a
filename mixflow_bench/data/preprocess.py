"""Pixel preprocessing shared by SiT, REPA and RAE: decode to RGB, ADM center crop, horizontal flip.

The center crop is the one ADM (guided-diffusion ``image_datasets.py``) introduced and the three baselines
reuse verbatim (SiT ``train.py``, REPA ``preprocessing/dataset_tools.py`` transform ``center-crop-dhariwal``,
RAE ``src/utils/train_utils.py``):

1. while the short side is at least ``2 * size``: BOX-resize to ``(w // 2, h // 2)``;
2. BICUBIC-resize by ``scale = size / short_side`` with each side ``round(side * scale)`` (Python ``round``);
3. crop ``size x size`` at offset ``((h - size) // 2, (w - size) // 2)``.

Flip: SiT and RAE apply ``RandomHorizontalFlip`` (p=0.5) to the cropped image before encoding; REPA's latent
cache stores the unflipped image only and trains without flips. A cache may therefore hold both orientations
(``flips=2``) and the loader picks one per (seed, epoch, index), or only the original (``flips=1``).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

ADM_CROP = "adm-center-crop"


def decode_rgb(data: bytes | str | Path) -> Image.Image:
    """Decode image bytes (or a file path) to a fully loaded RGB image (L/CMYK/P/RGBA -> RGB)."""
    if isinstance(data, (str, Path)):
        with open(data, "rb") as fh:
            data = fh.read()
    with Image.open(io.BytesIO(data)) as img:
        img.load()
        return img.convert("RGB")


def adm_center_crop(image: Image.Image, size: int) -> Image.Image:
    """ADM center crop of ``image`` to ``size x size`` (the baselines' training preprocessing)."""
    if size <= 0:
        raise ValueError(f"crop size must be positive, got {size}")
    while min(image.size) >= 2 * size:
        image = image.resize((image.width // 2, image.height // 2), resample=Image.Resampling.BOX)
    scale = size / min(image.size)
    target = (round(image.width * scale), round(image.height * scale))
    image = image.resize(target, resample=Image.Resampling.BICUBIC)
    left = (image.width - size) // 2
    top = (image.height - size) // 2
    return image.crop((left, top, left + size, top + size))


def preprocess_to_array(data: bytes | str | Path, size: int) -> np.ndarray:
    """Decode + RGB + ADM center crop -> uint8 array (size, size, 3)."""
    return np.asarray(adm_center_crop(decode_rgb(data), size), dtype=np.uint8)


def to_unit_tensor_batch(arrays: list[np.ndarray], flip: bool = False):
    """uint8 HWC arrays -> float32 tensor (B, 3, H, W) in [0, 1]; ``flip`` mirrors left-right."""
    import torch

    x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).to(torch.float32).div_(255.0)
    if flip:
        x = torch.flip(x, dims=[3])
    return x
