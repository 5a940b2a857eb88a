"""Images in [0, 1] to uint8 the way each baseline's sampler does it.

* ``round`` (SiT): ``clamp(127.5 x + 128, 0, 255)`` on x in [-1, 1], truncated by the uint8 cast; on an image
  in [0, 1] that is ``floor(255 p + 0.5)``, i.e. rounding.
* ``truncate`` (REPA, RAE): ``clamp(255 p, 0, 255)`` cast to uint8 (floor).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def quantize_tensor(images: Tensor, mode: str = "round") -> Tensor:
    """(B, 3, H, W) float images in [0, 1] -> (B, H, W, 3) uint8 NHWC on the same device."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(images.shape)}")
    p = images.detach().float()
    if mode == "round":
        q = (255.0 * p + 0.5).clamp(0, 255)
    elif mode == "truncate":
        q = (255.0 * p).clamp(0, 255)
    else:
        raise ValueError(f"unknown quantize mode {mode!r} (expected 'round' or 'truncate')")
    return q.to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def quantize(images: Tensor, mode: str = "round") -> np.ndarray:
    """(B, 3, H, W) float images in [0, 1] -> (B, H, W, 3) uint8 NHWC numpy array."""
    return quantize_tensor(images, mode).cpu().numpy().astype(np.uint8, copy=False)
