"""TensorFlow 1.x legacy ``ResizeBilinear`` (align_corners=False, no half-pixel centres), as in ADM's graph.

Source coordinate ``src = dst * (in / out)`` computed in float32, lower index ``floor(src)``, upper index
clamped to ``in - 1``; interpolate along x first, then along y, with TF's ``a + (b - a) * t`` form.
``torch.nn.functional.interpolate`` uses half-pixel centres and gives different values, hence this module.
It also holds clean-fid's ``clean`` resize (PIL bicubic), the option ``eval --resize clean``.
"""

from __future__ import annotations

import torch


def _axis_taps(
    in_size: int, out_size: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    scale = torch.tensor(in_size, dtype=torch.float32) / torch.tensor(out_size, dtype=torch.float32)
    src = torch.arange(out_size, dtype=torch.float32) * scale
    lower = torch.floor(src)
    frac = src - lower
    lo = lower.to(torch.int64)
    hi = torch.clamp(lo + 1, max=in_size - 1)
    return lo.to(device), hi.to(device), frac.to(device)


def resize_bilinear_tf1(x: torch.Tensor, size: tuple[int, int] = (299, 299)) -> torch.Tensor:
    """Resizes a float NCHW batch to ``size`` (H, W) like TF1 ``tf.image.resize_bilinear``."""
    if not x.is_floating_point():
        raise TypeError(f"resize_bilinear_tf1 needs a floating tensor, got {x.dtype}")
    out_h, out_w = size
    in_h, in_w = x.shape[-2:]
    if (in_h, in_w) == (out_h, out_w):
        return x
    y0, y1, fy = _axis_taps(in_h, out_h, x.device)
    x0, x1, fx = _axis_taps(in_w, out_w, x.device)
    fx = fx.to(x.dtype)
    fy = fy.to(x.dtype)[:, None]
    top_rows = x.index_select(-2, y0)
    bottom_rows = x.index_select(-2, y1)
    top_l, top_r = top_rows.index_select(-1, x0), top_rows.index_select(-1, x1)
    top = top_l + (top_r - top_l) * fx
    del top_l, top_r, top_rows
    bot_l, bot_r = bottom_rows.index_select(-1, x0), bottom_rows.index_select(-1, x1)
    bottom = bot_l + (bot_r - bot_l) * fx
    return top + (bottom - top) * fy


def resize_clean(x: torch.Tensor, size: tuple[int, int] = (299, 299)) -> torch.Tensor:
    """clean-fid's ``clean`` resize of a float NCHW batch of 0..255 values: each channel as a float32 PIL image
    ('F' mode), PIL's antialiased bicubic to ``size`` (H, W), clipped to 0..255 and not re-quantized."""
    import numpy as np
    from PIL import Image

    if not x.is_floating_point():
        raise TypeError(f"resize_clean needs a floating tensor, got {x.dtype}")
    out_h, out_w = size
    arr = x.detach().to("cpu", torch.float32).numpy()
    out = np.empty((*arr.shape[:2], out_h, out_w), np.float32)
    for i in range(arr.shape[0]):
        for c in range(arr.shape[1]):
            img = Image.fromarray(arr[i, c], mode="F").resize((out_w, out_h), resample=Image.BICUBIC)
            out[i, c] = np.asarray(img)
    return torch.from_numpy(np.clip(out, 0, 255)).to(x.device)
