"""Random-weight artifacts in the file formats and names the real hosts serve, for a dress rehearsal.

Each function returns ``{relative file name: bytes}`` as the host would serve them: the official SiT and REPA
``.pt`` files (a raw EMA state dict), RAE's ``stage2_model.pt``, decoder ``model.pt`` and ``stat.pt``
(``{"mean": None, "var": (768, g, g)}``), the diffusers folder of SD-VAE and the transformers folder of DINOv2 with
registers (``config.json`` + safetensors, written by the libraries themselves), and an ADM reference batch
(``arr_0`` uint8 NHWC plus ``mu``/``sigma``/``mu_s``/``sigma_s``). Weights are drawn N(0, 0.02) on top of each
model's own initialisation, so that no layer is zero and every path of the network is exercised.
"""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn


def perturbed(module: nn.Module, seed: int) -> nn.Module:
    """``module`` with N(0, 0.02) noise added to every floating parameter (zero-initialised layers included)."""
    device = next(module.parameters()).device
    g = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            if p.is_floating_point():
                p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype, device=device) * 0.02)
    return module


def torch_file(obj: object) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def zoo_checkpoint(model_name: str, seed: int = 0) -> bytes:
    """A zoo model's raw state dict, as SiT, REPA and RAE release their EMA weights (``torch.save(state_dict)``).

    Built on the GPU when there is one (initialising 0.7B parameters on a CPU takes long), saved from the CPU.
    """
    from mixflow_bench.models.zoo import build_model

    torch.manual_seed(seed)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = perturbed(build_model(model_name), seed)
    return torch_file({k: v.cpu() for k, v in model.state_dict().items()})


def rae_decoder(resolution: int, seed: int = 0) -> bytes:
    """RAE's ViT-XL pixel decoder ``model.pt`` (a raw ``GeneralDecoder`` state dict)."""
    from mixflow_bench.models.rae_stage1 import DecoderConfig, GeneralDecoder

    grid = resolution // 16
    torch.manual_seed(seed)
    return torch_file(perturbed(GeneralDecoder(num_patches=grid * grid, cfg=DecoderConfig()), seed).state_dict())


def rae_stats(resolution: int, seed: int = 0) -> bytes:
    """RAE's ``stat.pt``: ``{"mean": None, "var": (768, g, g)}`` with positive variances around 0.8."""
    grid = resolution // 16
    g = torch.Generator().manual_seed(seed)
    var = torch.rand(768, grid, grid, generator=g) * 1.5 + 0.05
    return torch_file({"mean": None, "var": var})


def _saved_folder(save: object) -> dict[str, bytes]:
    with tempfile.TemporaryDirectory() as tmp:
        save(tmp)  # type: ignore[operator]
        return {p.name: p.read_bytes() for p in sorted(Path(tmp).iterdir()) if p.is_file()}


def sd_vae_folder(seed: int = 0) -> dict[str, bytes]:
    """The diffusers folder of an SD-VAE (``config.json``, ``diffusion_pytorch_model.safetensors``)."""
    from diffusers import AutoencoderKL

    from mixflow_bench.models.autoencoders import sd_vae_config

    torch.manual_seed(seed)
    vae = perturbed(AutoencoderKL(**sd_vae_config()), seed)
    return _saved_folder(lambda d: vae.save_pretrained(d, safe_serialization=True))


def dinov2_folder(seed: int = 0) -> dict[str, bytes]:
    """The transformers folder of DINOv2-B with registers (``config.json``, ``model.safetensors``)."""
    from transformers import Dinov2WithRegistersModel

    from mixflow_bench.models.rae_stage1 import dinov2_reg_base_config

    torch.manual_seed(seed)
    model = perturbed(Dinov2WithRegistersModel(dinov2_reg_base_config()), seed)
    return _saved_folder(lambda d: model.save_pretrained(d, safe_serialization=True))


def adm_reference_batch(images: np.ndarray, inception_weights: str, device: str = "cpu") -> bytes:
    """An ADM reference batch: ``arr_0`` plus its Inception statistics, computed with the real network."""
    from mixflow_bench.metrics.features import extract
    from mixflow_bench.metrics.inception import load_inception
    from mixflow_bench.metrics.npz_stream import NpzImageReader

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ref.npz"
        np.savez(path, arr_0=images)
        net = load_inception(inception_weights, device)
        with NpzImageReader(path) as reader:
            summary = extract(reader, net, device=device, batch_size=50, pool_stats=True, spatial_stats=True,
                              inception_score=False, keep_pool=False)  # fmt: skip
    pool, spatial = summary.pool_stats, summary.spatial_stats
    buf = io.BytesIO()
    np.savez(buf, arr_0=images, mu=pool.mu, sigma=pool.sigma, mu_s=spatial.mu, sigma_s=spatial.sigma)
    return buf.getvalue()


def procedural_images(n: int, size: int, seed: int) -> np.ndarray:
    """``n`` smooth colour images (uint8 NHWC): low-frequency noise upsampled, so crops and encoders see
    structure rather than white noise."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 8, 8, generator=g)
    up = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)
    return (up.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


__all__ = [
    "adm_reference_batch",
    "dinov2_folder",
    "perturbed",
    "procedural_images",
    "rae_decoder",
    "rae_stats",
    "sd_vae_folder",
    "torch_file",
    "zoo_checkpoint",
]
