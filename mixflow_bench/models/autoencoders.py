"""Latent codecs: the one interface between pixels and the latents the generators work in.

Sampling decodes model latents with :meth:`LatentCodec.decode`; the data pipeline stores what
:meth:`LatentCodec.encode` returns and rebuilds training latents with :meth:`LatentCodec.latent_from_stored`.

* ``sd-vae-ft-ema`` / ``sd-vae-ft-mse``: Stable Diffusion's KL autoencoder (diffusers ``AutoencoderKL``,
  config built locally), 4 x H/8 x W/8 latents scaled by 0.18215. ``encode`` stores the posterior's unscaled
  mean and std, so training can sample a fresh posterior draw each epoch.
* ``rae-dinov2-b``: RAE's frozen DINOv2-B (registers) encoder, normalised by ``stat.pt``, with the ViT-XL
  pixel decoder; 768 x 16 x 16 (256 px) or 768 x 32 x 32 (512 px) latents.

Weights come from local files named in ``weights`` or, failing that, from ``mixflow_bench.hub.fetch``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from mixflow_bench.data.codec import SD_VAE_SCALE, model_latent_from_stored
from mixflow_bench.models.rae_stage1 import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    DecoderConfig,
    DinoV2Encoder,
    GeneralDecoder,
    LatentStats,
)

SD_VAE_NAMES = ("sd-vae-ft-ema", "sd-vae-ft-mse")
RAE_NAME = "rae-dinov2-b"
CODEC_NAMES = (*SD_VAE_NAMES, RAE_NAME)
RESOLUTIONS = (256, 512)


@runtime_checkable
class LatentCodec(Protocol):
    """Pixels <-> model latents for one autoencoder at one resolution."""

    name: str
    resolution: int
    latent_shape: tuple[int, int, int]

    def encode(self, images: Tensor) -> dict[str, Tensor]: ...

    def latent_from_stored(self, fields: dict[str, Tensor], generator: torch.Generator | None = None) -> Tensor: ...

    def decode(self, z: Tensor) -> Tensor: ...


def _check_images(images: Tensor, resolution: int) -> None:
    if images.ndim != 4 or images.shape[1] != 3 or not images.is_floating_point():
        raise ValueError(
            f"images must be a float (B, 3, H, W) tensor in [0, 1], got {images.dtype} {tuple(images.shape)}"
        )
    if images.shape[-2:] != (resolution, resolution):
        raise ValueError(f"codec is for {resolution} px images, got {tuple(images.shape[-2:])}")


def _check_latent(z: Tensor, shape: tuple[int, int, int]) -> None:
    if z.ndim != 4 or tuple(z.shape[1:]) != shape:
        raise ValueError(f"latents must be (B, {', '.join(map(str, shape))}), got {tuple(z.shape)}")


def _resolve(weights: dict[str, str | Path] | None, key: str, artifact: str) -> Path:
    """Local path for one weight file: ``weights[key]`` if given, else the hub artifact ``artifact``."""
    if weights and weights.get(key) is not None:
        path = Path(weights[key])
        if not path.exists():
            raise FileNotFoundError(f"weights[{key!r}] = {path} does not exist")
        return path
    try:
        from mixflow_bench.hub import fetch  # provided by the hub module
    except ImportError as err:
        raise RuntimeError(
            f"no local file given for {key!r} (pass weights={{{key!r}: PATH}}) and mixflow_bench.hub.fetch "
            f"is unavailable to fetch artifact {artifact!r}"
        ) from err
    return Path(fetch(artifact))


def _load_tensors(path: Path) -> dict[str, Tensor]:
    """A flat state dict from a .safetensors / torch file, or a folder holding one (HF layout)."""
    if path.is_dir():
        for candidate in (
            "model.safetensors",
            "diffusion_pytorch_model.safetensors",
            "pytorch_model.bin",
            "diffusion_pytorch_model.bin",
        ):
            if (path / candidate).exists():
                return _load_tensors(path / candidate)
        raise FileNotFoundError(f"{path}: no model.safetensors / diffusion_pytorch_model.safetensors inside")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "ema" in state and isinstance(state["ema"], dict):
        state = state["ema"]
    return state


def sd_vae_config() -> dict:
    """The ``AutoencoderKL`` config shared by ``stabilityai/sd-vae-ft-ema`` and ``sd-vae-ft-mse``."""
    return dict(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(128, 256, 512, 512),
        layers_per_block=2,
        act_fn="silu",
        latent_channels=4,
        norm_num_groups=32,
        sample_size=256,
        scaling_factor=SD_VAE_SCALE,
    )


class SDVAECodec(nn.Module):
    """Stable Diffusion KL-f8 autoencoder; latents are ``0.18215 * posterior sample``."""

    def __init__(self, name: str, resolution: int, vae: nn.Module) -> None:
        super().__init__()
        self.name = name
        self.resolution = resolution
        self.latent_shape = (4, resolution // 8, resolution // 8)
        self.vae = vae.eval().requires_grad_(False)

    @torch.no_grad()
    def encode(self, images: Tensor) -> dict[str, Tensor]:
        """Posterior ``{"mean", "std"}`` (unscaled, (B, 4, H/8, W/8)) of images in [0, 1]."""
        _check_images(images, self.resolution)
        x = images.to(next(self.vae.parameters()).dtype) * 2 - 1
        dist = self.vae.encode(x).latent_dist
        return {"mean": dist.mean, "std": dist.std}

    def latent_from_stored(self, fields: dict[str, Tensor], generator: torch.Generator | None = None) -> Tensor:
        """A training latent ``0.18215 * (mean + std * eps)``, eps ~ N(0, I) drawn from ``generator``."""
        return model_latent_from_stored(self.name, fields, generator)

    @torch.no_grad()
    def decode(self, z: Tensor) -> Tensor:
        """Model latents (B, 4, H/8, W/8) -> images (B, 3, H, W) in [0, 1]."""
        _check_latent(z, self.latent_shape)
        x = self.vae.decode(z.to(next(self.vae.parameters()).dtype) / SD_VAE_SCALE).sample
        return ((x.float() + 1) / 2).clamp(0, 1)


class RAECodec(nn.Module):
    """RAE stage 1: DINOv2-B/registers features normalised by ``stat.pt``, decoded by a ViT pixel decoder."""

    def __init__(
        self,
        resolution: int,
        encoder: DinoV2Encoder,
        decoder: GeneralDecoder,
        stats: LatentStats,
        name: str = RAE_NAME,
    ) -> None:
        super().__init__()
        self.name = name
        self.resolution = resolution
        g = encoder.grid
        if decoder.grid != g:
            raise ValueError(f"encoder grid {g} and decoder grid {decoder.grid} differ")
        self.latent_shape = (encoder.config.hidden_size, g, g)
        if tuple(stats.var.shape) not in (self.latent_shape, (self.latent_shape[0], 1, 1), (1,), ()):
            raise ValueError(f"stat var shape {tuple(stats.var.shape)} does not fit latents {self.latent_shape}")
        self.encoder = encoder.eval()
        self.decoder = decoder.eval().requires_grad_(False)
        self.stats = stats
        self.register_buffer("pix_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pix_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    @torch.no_grad()
    def encode(self, images: Tensor) -> dict[str, Tensor]:
        """``{"latent"}``: normalised (B, 768, g, g) features of images in [0, 1]."""
        _check_images(images, self.resolution)
        return {"latent": self.stats.normalize(self.encoder(images))}

    def latent_from_stored(self, fields: dict[str, Tensor], generator: torch.Generator | None = None) -> Tensor:
        """The stored latent itself (RAE latents are deterministic)."""
        if "latent" not in fields:
            raise KeyError(f"stored RAE fields lack 'latent' (have {sorted(fields)})")
        return fields["latent"]

    @torch.no_grad()
    def decode(self, z: Tensor) -> Tensor:
        """Model latents (B, 768, g, g) -> images (B, 3, 16g, 16g) in [0, 1]."""
        _check_latent(z, self.latent_shape)
        dtype = self.decoder.decoder_embed.weight.dtype
        x = self.decoder.decode_features(self.stats.denormalize(z.float()).to(dtype)).float()
        return (x * self.pix_std + self.pix_mean).clamp(0, 1)


def _build_sd_vae(name: str, resolution: int, weights, random_init: bool) -> SDVAECodec:
    from diffusers import AutoencoderKL

    if random_init:
        vae = AutoencoderKL(**sd_vae_config())
    else:
        path = _resolve(weights, "vae", name)
        if path.is_dir() and (path / "config.json").exists():
            vae = AutoencoderKL.from_pretrained(str(path), local_files_only=True)
        else:
            vae = AutoencoderKL(**sd_vae_config())
            vae.load_state_dict(_load_tensors(path), strict=True)
    return SDVAECodec(name, resolution, vae)


def _build_rae(resolution: int, weights, random_init: bool) -> RAECodec:
    grid = resolution // 16
    encoder = DinoV2Encoder(input_size=14 * grid)
    decoder = GeneralDecoder(num_patches=grid * grid, cfg=DecoderConfig())
    if random_init:
        stats = LatentStats(torch.ones(768, grid, grid))
    else:
        encoder.load_hf_state_dict(_load_tensors(_resolve(weights, "encoder", "dinov2-reg-b")))
        decoder.load_state_dict(_load_tensors(_resolve(weights, "decoder", f"rae-decoder-{resolution}")), strict=True)
        stats = LatentStats.load(_resolve(weights, "stats", f"rae-stats-{resolution}"))
    return RAECodec(resolution, encoder, decoder, stats)


def build_codec(
    name: str,
    resolution: int,
    *,
    weights: dict[str, str | Path] | None = None,
    random_init: bool = False,
    device="cpu",
    dtype=torch.float32,
) -> LatentCodec:
    """Build codec ``name`` for ``resolution`` px images.

    ``weights`` maps ``"vae"`` (SD-VAE: a diffusers folder or a state-dict file) or ``"encoder"``,
    ``"decoder"``, ``"stats"`` (RAE) to local files; missing entries are fetched from the hub.
    ``random_init=True`` skips all weights (tests).
    """
    if name not in CODEC_NAMES:
        raise ValueError(f"unknown codec {name!r}; valid: {list(CODEC_NAMES)}")
    if resolution not in RESOLUTIONS:
        raise ValueError(f"resolution must be one of {RESOLUTIONS}, got {resolution}")
    if name in SD_VAE_NAMES:
        codec: nn.Module = _build_sd_vae(name, resolution, weights, random_init)
    else:
        codec = _build_rae(resolution, weights, random_init)
    codec = codec.to(device=device, dtype=dtype)
    if isinstance(codec, RAECodec):  # normalisation statistics stay float32
        codec.stats.float()
    return codec
