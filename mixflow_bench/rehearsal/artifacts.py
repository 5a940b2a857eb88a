"""Random-weight artifacts in the file formats and names the real hosts serve, for a dress rehearsal.

Each function returns ``{relative file name: bytes}`` as the host would serve them: the official SiT and REPA
``.pt`` files (a raw EMA state dict), RAE's ``stage2_model.pt``, decoder ``model.pt`` and ``stat.pt``
(``{"mean": None, "var": (768, g, g)}``), the diffusers folder of SD-VAE and the transformers folder of DINOv2 with
registers (``config.json`` + safetensors, written by the libraries themselves), and an ADM reference batch
(``arr_0`` uint8 NHWC plus ``mu``/``sigma``/``mu_s``/``sigma_s``), GMFlow's bf16 Diffusers safetensors, the κ-FC
Lightning ``.ckpt`` (``state_dict`` with ``denoiser.*``, ``ema.module.*``, ``noise_predictor.*`` beside Lightning's
own entries) and the CIFAR-10 python archive. Weights are drawn N(0, 0.02) on top of each
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


MIXED_SOURCE_FORMS = ("lightning", "stripped", "flat")


def mixed_source_state(velocity: nn.Module, source: nn.Module, seed: int = 0) -> dict[str, torch.Tensor]:
    """The κ-FC LightningModule's ``state_dict()``: the velocity network ``denoiser.*``, its EMA copy (an
    ``AveragedModel``: ``ema.module.*`` and the ``ema.n_averaged`` counter; different values from ``denoiser``,
    so that a loader taking the wrong one is seen) and the source network ``noise_predictor.network.*``."""
    state = {f"denoiser.{k}": v.clone() for k, v in perturbed(velocity, seed).state_dict().items()}
    state |= {f"ema.module.{k}": v.clone() for k, v in perturbed(velocity, seed + 1).state_dict().items()}
    state["ema.n_averaged"] = torch.tensor(500_000)
    state |= {f"noise_predictor.network.{k}": v.clone() for k, v in perturbed(source, seed + 2).state_dict().items()}
    return state


def lightning_checkpoint(state: dict[str, torch.Tensor], global_step: int = 500_000) -> dict[str, object]:
    """What PyTorch Lightning's ``Trainer.save_checkpoint`` writes for the κ-FC module (``.ckpt``): ``state_dict``
    beside Lightning's own entries (versions, loop progress, callback states, Adam's state, the warm-up schedule)."""
    params = [k for k in state if not k.startswith("ema.") and state[k].is_floating_point()]
    progress = {"total": {"ready": global_step, "completed": global_step}, "current": {"ready": 0, "completed": 0}}
    return {
        "epoch": 1280,
        "global_step": global_step,
        "pytorch-lightning_version": "2.2.1",
        "state_dict": state,
        "loops": {"fit_loop": {"state_dict": {}, "epoch_progress": progress,
                               "epoch_loop.batch_progress": progress}},  # fmt: skip
        "callbacks": {"ModelCheckpoint{'monitor': 'info/global_step', 'mode': 'max'}": {
            "monitor": "info/global_step", "best_model_score": torch.tensor(float(global_step)),
            "best_model_path": "/outputs/checkpoints/last.ckpt", "dirpath": "/outputs/checkpoints",
            "best_k_models": {"/outputs/checkpoints/last.ckpt": torch.tensor(float(global_step))}}},
        "optimizer_states": [{
            "state": {i: {"step": torch.tensor(float(global_step)), "exp_avg": torch.zeros(1),
                          "exp_avg_sq": torch.zeros(1)} for i in range(2)},
            "param_groups": [{"lr": 2e-4, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0,
                              "amsgrad": False, "initial_lr": 2e-4, "params": list(range(len(params)))}]}],
        "lr_schedulers": [{"base_lrs": [2e-4], "last_epoch": global_step, "_step_count": global_step + 1,
                           "_get_lr_called_within_step": False, "_last_lr": [2e-4], "lr_lambdas": [None]}],
    }  # fmt: skip


def mixed_source_checkpoint(config: object, form: str = "lightning", seed: int = 0) -> bytes:
    """A released κ-FC checkpoint for SongUNet ``config`` with the released source U-Net, as ``form``:
    ``lightning`` (the ``.ckpt`` the authors released), ``stripped`` (``{"state_dict": ...}`` alone) or ``flat``
    (the module's prefixed state dict, ``torch.save(module.state_dict())``)."""
    from mixflow_bench.models.songunet import songunet
    from mixflow_bench.models.source_network import SourceUNet

    if form not in MIXED_SOURCE_FORMS:
        raise ValueError(f"form must be one of {MIXED_SOURCE_FORMS}, got {form!r}")
    torch.manual_seed(seed)
    velocity = songunet(config)
    source = SourceUNet(resolution=velocity.config.resolution)
    state = mixed_source_state(velocity, source, seed)
    obj = {"lightning": lightning_checkpoint, "stripped": lambda s: {"state_dict": s}, "flat": lambda s: s}[form]
    return torch_file(obj(state))


def gmflow_transformer(seed: int = 0, **overrides: object) -> bytes:
    """GMFlow's ``transformer/diffusion_pytorch_model.bf16.safetensors``: the GM-DiT state dict in bfloat16, as
    Diffusers' ``save_pretrained(variant="bf16")`` writes it (safetensors with ``{"format": "pt"}`` metadata)."""
    from safetensors.torch import save

    from mixflow_bench.models.gmdit import gmdit_xl2

    torch.manual_seed(seed)
    model = perturbed(gmdit_xl2(**overrides), seed)
    state = {k: v.to(torch.bfloat16).contiguous() for k, v in model.state_dict().items()}
    return save(state, metadata={"format": "pt"})


def cifar10_archive(images: np.ndarray, seed: int = 0) -> bytes:
    """``cifar-10-python.tar.gz`` as the Toronto host serves it: pickled ``data_batch_1..5`` (rows of R, G, B planes)
    and ``test_batch`` under ``cifar-10-batches-py/``, plus ``batches.meta``; ``images`` (uint8 NHWC, 32x32) are
    spread over the five training batches in order."""
    import pickle
    import tarfile

    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        parts = np.array_split(images, 5)
        for name, part in [(f"data_batch_{i + 1}", p) for i, p in enumerate(parts)] + [("test_batch", images[:2])]:
            rows = part.transpose(0, 3, 1, 2).reshape(len(part), 3072)
            obj = {b"batch_label": name.encode(), b"labels": rng.integers(0, 10, len(part)).tolist(), b"data": rows,
                   b"filenames": [f"{name}_{i}.png".encode() for i in range(len(part))]}  # fmt: skip
            raw = pickle.dumps(obj, protocol=2)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
        raw = pickle.dumps({b"label_names": [b"airplane", b"automobile"]}, protocol=2)
        info = tarfile.TarInfo("cifar-10-batches-py/batches.meta")
        info.size = len(raw)
        tar.addfile(info, io.BytesIO(raw))
    return buf.getvalue()


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
    "cifar10_archive",
    "dinov2_folder",
    "gmflow_transformer",
    "lightning_checkpoint",
    "mixed_source_checkpoint",
    "mixed_source_state",
    "perturbed",
    "procedural_images",
    "rae_decoder",
    "rae_stats",
    "sd_vae_folder",
    "torch_file",
    "zoo_checkpoint",
]
