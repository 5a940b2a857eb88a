"""A tiny deterministic stand-in codec with the zoo's codec interface, for the data tests.

``kind="vae"`` returns posterior moments {"mean", "std"} (4 x H/8 x W/8) from a fixed random stride-8 conv;
``kind="rae"`` returns {"latent"} (8 x H/16 x W/16). ``STUB_DELAY`` (seconds per encode call) slows it down so
a test can interrupt a running ``prepare``.
"""

from __future__ import annotations

import os
import time

import torch
from torch import Tensor


class StubCodec:
    def __init__(self, resolution: int, kind: str = "vae") -> None:
        g = torch.Generator().manual_seed(1234)
        self.kind = kind
        if kind == "vae":
            self.stride, ch = 8, 8
            self.latent_shape = (4, resolution // 8, resolution // 8)
        else:
            self.stride, ch = 16, 8
            self.latent_shape = (8, resolution // 16, resolution // 16)
        self.weight = torch.randn(ch, 3, self.stride, self.stride, generator=g) / (3 * self.stride)
        self.delay = float(os.environ.get("STUB_DELAY", "0"))

    def encode(self, images: Tensor) -> dict[str, Tensor]:
        if self.delay:
            time.sleep(self.delay)
        h = torch.nn.functional.conv2d(images * 2 - 1, self.weight, stride=self.stride)
        if self.kind == "vae":
            mean, logvar = h.chunk(2, dim=1)
            return {"mean": mean, "std": torch.exp(0.5 * logvar.clamp(-30, 20))}
        return {"latent": h}

    def latent_from_stored(self, fields: dict[str, Tensor], generator: torch.Generator | None) -> Tensor:
        if self.kind == "vae":
            eps = torch.randn(fields["mean"].shape, generator=generator)
            return (fields["mean"] + fields["std"] * eps) * 0.18215
        return fields["latent"]


def make_codec(resolution: int, random_init: bool = True, device: str = "cpu") -> StubCodec:
    return StubCodec(resolution, "vae")


def make_rae_codec(resolution: int, random_init: bool = True, device: str = "cpu") -> StubCodec:
    return StubCodec(resolution, "rae")


def write_image_tree(root, corrupt: bool = True, seed: int = 0) -> dict[str, str]:
    """A small ImageNet-style class-folder tree of real files; returns {relative path: PIL mode written}."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    specs = {  # class folder -> list of (name, size, mode, format)
        "n02": [
            ("a.jpg", (77, 53), "RGB", "JPEG"),
            ("b.png", (64, 64), "RGBA", "PNG"),
            ("sub/c.JPEG", (45, 90), "L", "JPEG"),
        ],
        "n01": [
            ("x.jpg", (300, 170), "CMYK", "JPEG"),
            ("y.png", (33, 41), "P", "PNG"),
            ("z.png", (129, 65), "L", "PNG"),
        ],
        "n10": [
            ("p.jpg", (96, 200), "RGB", "JPEG"),
            ("q.png", (32, 32), "RGB", "PNG"),
            ("r.jpeg", (150, 151), "RGB", "JPEG"),
        ],
    }
    written = {}
    for cls, items in specs.items():
        for name, (w, h), mode, fmt in items:
            path = os.path.join(root, cls, name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            yy, xx = np.mgrid[0:h, 0:w]
            base = np.stack([xx * 255 // max(w - 1, 1), yy * 255 // max(h - 1, 1), (xx + yy) % 256], -1)
            arr = np.clip(base + rng.integers(-40, 40, base.shape), 0, 255).astype(np.uint8)
            img = Image.fromarray(arr, "RGB")
            img = img.convert("P", palette=Image.Palette.ADAPTIVE) if mode == "P" else img.convert(mode)
            img.save(path, fmt)
            written[f"{cls}/{name}"] = mode
    if corrupt:
        path = os.path.join(root, "n02", "broken.jpg")
        with open(path, "wb") as fh:
            fh.write(b"\xff\xd8\xff\xe0 definitely not a jpeg" + bytes(range(64)))
        written["n02/broken.jpg"] = "corrupt"
    return written
