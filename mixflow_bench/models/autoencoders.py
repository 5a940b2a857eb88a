"""Latent codecs: the one interface between pixels and the latents the generators work in.

Sampling decodes model latents with :meth:`LatentCodec.decode`; the data pipeline stores what
:meth:`LatentCodec.encode` returns and rebuilds training latents with :meth:`LatentCodec.latent_from_stored`.

* ``sd-vae-ft-ema`` / ``sd-vae-ft-mse``: Stable Diffusion's KL autoencoder (diffusers ``AutoencoderKL``,
  config built locally), 4 x H/8 x W/8 latents scaled by 0.18215. ``encode`` stores the posterior's unscaled
  mean and std, so training can sample a fresh posterior draw each epoch.
* ``rae-dinov2-b``: RAE's frozen DINOv2-B (registers) encoder, normalised by ``stat.pt``, with the ViT-XL
  pixel decoder; 768 x 16 x 16 (256 px) or 768 x 32 x 32 (512 px) latents.

Weights come from local files named in ``weights``; :func:`mixflow_bench.data.codec.build_named_codec` fetches the
hub artifacts :func:`weight_artifacts` names first. SD-VAE and DINOv2 load through their libraries' own
``from_pretrained`` (which convert older key names), strictly: a missing, unexpected or mis-shaped tensor is an
error.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from mixflow_bench.models.hf_loading import check_loading_info, hf_weights_folder
from mixflow_bench.models.latents import SD_VAE_SCALE, model_latent_from_stored
from mixflow_bench.models.rae_stage1 import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    DecoderConfig,
    DinoV2Encoder,
    GeneralDecoder,
    LatentStats,
    dinov2_reg_base_config,
)
from mixflow_bench.models.zoo import load_state_dict_file

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


def weight_artifacts(name: str, resolution: int) -> dict[str, str]:
    """The hub artifact behind each weight file codec ``name`` loads at ``resolution``: ``{"vae": ...}`` for SD-VAE,
    ``{"encoder", "decoder", "stats"}`` for RAE (the keys of :func:`build_codec`'s ``weights``)."""
    if name not in CODEC_NAMES:
        raise ValueError(f"unknown codec {name!r}; valid: {list(CODEC_NAMES)}")
    if resolution not in RESOLUTIONS:
        raise ValueError(f"resolution must be one of {RESOLUTIONS}, got {resolution}")
    if name in SD_VAE_NAMES:
        return {"vae": name}
    return {"encoder": "dinov2-reg-b", "decoder": f"rae-decoder-{resolution}", "stats": f"rae-stats-{resolution}"}


def _local_files(weights: dict[str, str | Path] | None, artifacts: dict[str, str]) -> dict[str, Path]:
    """The local file of every weight the codec loads (``artifacts``: :func:`weight_artifacts`), from ``weights``."""
    files = {}
    for key, artifact in artifacts.items():
        if not weights or weights.get(key) is None:
            raise ValueError(
                f"no file for {key!r} (artifact {artifact!r}); pass weights={{{key!r}: PATH}}, or build the codec "
                "through mixflow_bench.data.codec.build_named_codec, which fetches it"
            )
        files[key] = Path(weights[key])
        if not files[key].exists():
            raise FileNotFoundError(f"weights[{key!r}] = {files[key]} does not exist")
    return files


def load_sd_vae(path: str | Path) -> nn.Module:
    """A diffusers ``AutoencoderKL`` from a snapshot folder or weights file, strictly, through diffusers' loader.

    ``from_pretrained`` renames the attention weights of older diffusers files (``query``/``key``/``value``/
    ``proj_attn`` to ``to_q``/``to_k``/``to_v``/``to_out.0``), which ``stabilityai/sd-vae-ft-*`` still serve.
    A bare file without ``config.json`` gets the SD-VAE config (:func:`sd_vae_config`).
    """
    from diffusers import AutoencoderKL

    path = Path(path)

    def write_config(folder: Path) -> None:
        config = {"_class_name": "AutoencoderKL", **sd_vae_config()}
        (folder / "config.json").write_text(json.dumps(config, indent=2))

    with hf_weights_folder(path, "diffusion_pytorch_model.safetensors", write_config) as (folder, safetensors):
        vae, info = AutoencoderKL.from_pretrained(
            str(folder), use_safetensors=safetensors, local_files_only=True, output_loading_info=True
        )
    check_loading_info(info, path, "SD-VAE (AutoencoderKL)")
    return vae.eval()


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


def _build_sd_vae(name: str, resolution: int, files: dict[str, Path] | None) -> SDVAECodec:
    from diffusers import AutoencoderKL

    vae = AutoencoderKL(**sd_vae_config()) if files is None else load_sd_vae(files["vae"])
    return SDVAECodec(name, resolution, vae)


def _build_rae(resolution: int, files: dict[str, Path] | None) -> RAECodec:
    grid = resolution // 16
    decoder = GeneralDecoder(num_patches=grid * grid, cfg=DecoderConfig())
    if files is None:
        encoder = DinoV2Encoder(input_size=14 * grid)
        stats = LatentStats(torch.ones(768, grid, grid))
    else:
        encoder = DinoV2Encoder.from_pretrained(files["encoder"], input_size=14 * grid, expect=dinov2_reg_base_config())
        decoder.load_state_dict(load_state_dict_file(files["decoder"]), strict=True)
        stats = LatentStats.load(files["stats"])
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
    ``"decoder"``, ``"stats"`` (RAE) to local files (:func:`weight_artifacts` names the hub artifact of each).
    ``random_init=True`` skips all weights (tests).
    """
    artifacts = weight_artifacts(name, resolution)  # checks the name and resolution
    files = None if random_init else _local_files(weights, artifacts)
    if name in SD_VAE_NAMES:
        codec: nn.Module = _build_sd_vae(name, resolution, files)
    else:
        codec = _build_rae(resolution, files)
    codec = codec.to(device=device, dtype=dtype)
    if isinstance(codec, RAECodec):  # normalisation statistics stay float32
        codec.stats.float()
    return codec
