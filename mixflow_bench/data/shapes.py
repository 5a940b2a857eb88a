"""Procedural class-conditional images: one coloured shape on a two-colour gradient, at any resolution.

The class is the shape (:data:`SHAPE_CLASSES`); position, size, rotation, the shape's colour and the background
gradient (two colours along a random direction) vary per image. All random parameters come from one CPU
``torch.Generator`` seeded with ``seed`` and are drawn for the whole set at once, so a set is a pure function of
``(num, seed, size)``: rasterising in chunks, or on another device, gives the same parameters. Edges are
anti-aliased over one pixel through each shape's signed distance; pixels are rounded to uint8.

No download: the data set is made by the project, deterministic by seed.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

SHAPE_CLASSES: tuple[str, ...] = (
    "disc",
    "square",
    "triangle",
    "ring",
    "plus",
    "hollow-square",
    "half-disc",
    "ellipse",
)


def _shape_distances(px: Tensor, py: Tensor) -> Tensor:
    """Signed distances (negative inside) of every class's shape in unit shape coordinates, (K, ...)."""
    r = torch.sqrt(px * px + py * py)
    ax, ay = px.abs(), py.abs()
    box = torch.maximum(ax, ay)
    # equilateral triangle: the largest of three half-plane distances (normals at 90 + 120 k degrees)
    normals = [
        (math.cos(a), math.sin(a)) for a in (math.pi / 2, math.pi / 2 + 2 * math.pi / 3, math.pi / 2 + 4 * math.pi / 3)
    ]
    tri = torch.stack([nx * px + ny * py for nx, ny in normals]).amax(0) - 0.5
    plus = torch.minimum(torch.maximum(ax - 0.3, ay - 0.95), torch.maximum(ax - 0.95, ay - 0.3))
    ellipse = (torch.sqrt(px * px + (2.0 * py) ** 2) - 1.0) * 0.5
    return torch.stack(
        [
            r - 1.0,
            box - 0.8,
            tri,
            (r - 0.75).abs() - 0.25,
            plus,
            (box - 0.72).abs() - 0.18,
            torch.maximum(r - 1.0, py),
            ellipse,
        ]
    )


def draw_shape_parameters(num: int, seed: int) -> dict[str, Tensor]:
    """Every random parameter of ``num`` images (CPU, float64; labels int64), from one generator."""
    g = torch.Generator().manual_seed(int(seed))
    k = len(SHAPE_CLASSES)
    return {
        "label": torch.randint(k, (num,), generator=g),
        "center": (torch.rand(num, 2, generator=g, dtype=torch.float64) - 0.5) * 0.8,
        "scale": 0.28 + 0.32 * torch.rand(num, generator=g, dtype=torch.float64),
        "angle": 2 * math.pi * torch.rand(num, generator=g, dtype=torch.float64),
        "fg": torch.rand(num, 3, generator=g, dtype=torch.float64),
        "bg0": torch.rand(num, 3, generator=g, dtype=torch.float64) * 0.6,
        "bg1": torch.rand(num, 3, generator=g, dtype=torch.float64) * 0.6,
        "bg_angle": 2 * math.pi * torch.rand(num, generator=g, dtype=torch.float64),
    }


def rasterize_shapes(params: dict[str, Tensor], size: int = 32, device: str | torch.device = "cpu") -> Tensor:
    """uint8 images (N, 3, size, size) of the parameters from :func:`draw_shape_parameters` (float32 arithmetic)."""
    p = {k: v.to(device) for k, v in params.items()}
    n = len(p["label"])
    coords = (torch.arange(size, device=device, dtype=torch.float32) + 0.5) * (2.0 / size) - 1.0  # pixel centres
    gy, gx = torch.meshgrid(coords, coords, indexing="ij")  # row = y
    cx, cy = p["center"][:, 0].float().view(n, 1, 1), p["center"][:, 1].float().view(n, 1, 1)
    scale = p["scale"].float().view(n, 1, 1)
    cos, sin = torch.cos(p["angle"]).float().view(n, 1, 1), torch.sin(p["angle"]).float().view(n, 1, 1)
    dx, dy = gx - cx, gy - cy
    ux, uy = (cos * dx + sin * dy) / scale, (-sin * dx + cos * dy) / scale
    dist = _shape_distances(ux, uy)  # (K, N, H, W) in shape units
    dist = dist.gather(0, p["label"].view(1, n, 1, 1).expand(1, n, size, size))[0] * scale
    alpha = (0.5 - dist * (size / 2.0)).clamp(0.0, 1.0)[:, None]  # one-pixel anti-aliasing
    bc, bs = torch.cos(p["bg_angle"]).float().view(n, 1, 1), torch.sin(p["bg_angle"]).float().view(n, 1, 1)
    ramp = ((bc * gx + bs * gy) * 0.5 + 0.5)[:, None]  # 0..1 along the gradient's direction
    bg = p["bg0"].float().view(n, 3, 1, 1) * (1 - ramp) + p["bg1"].float().view(n, 3, 1, 1) * ramp
    img = bg * (1 - alpha) + p["fg"].float().view(n, 3, 1, 1) * alpha
    return (img * 255.0).round().clamp(0, 255).to(torch.uint8)


def generate_shapes(
    num: int, seed: int, size: int = 32, device: str | torch.device = "cpu", chunk: int = 8192
) -> tuple[Tensor, Tensor]:
    """``num`` uint8 images (N, 3, size, size) and their labels (N,), deterministic in ``(num, seed, size)``."""
    if num < 0 or size < 4:
        raise ValueError(f"need num >= 0 and size >= 4, got num={num}, size={size}")
    params = draw_shape_parameters(num, seed)
    parts = [
        rasterize_shapes({k: v[i : i + chunk] for k, v in params.items()}, size, device) for i in range(0, num, chunk)
    ]
    images = torch.cat(parts) if parts else torch.zeros((0, 3, size, size), dtype=torch.uint8, device=device)
    return images, params["label"].to(device)


def to_model_space(images: Tensor) -> Tensor:
    """uint8 images -> float in [-1, 1] (``x / 127.5 - 1``)."""
    return images.float() / 127.5 - 1.0


def to_uint8(x: Tensor) -> Tensor:
    """Model-space images in [-1, 1] -> uint8, rounding as SiT's sampler does (``127.5 x + 128``)."""
    return (127.5 * x.float() + 128.0).clamp(0, 255).to(torch.uint8)
