"""Latent codecs: shapes, scaling and normalisation formulas, with small random-weight autoencoders."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mixflow_bench.models.autoencoders import SD_VAE_SCALE, RAECodec, SDVAECodec, build_codec, sd_vae_config
from mixflow_bench.models.rae_stage1 import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    DecoderConfig,
    DinoV2Encoder,
    GeneralDecoder,
    LatentStats,
    dinov2_reg_base_config,
)

torch.set_num_threads(1)


def tiny_vae():
    from diffusers import AutoencoderKL

    cfg = sd_vae_config()
    cfg.update(
        block_out_channels=(32, 32),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        layers_per_block=1,
    )
    torch.manual_seed(0)
    return AutoencoderKL(**cfg).eval()


def tiny_rae(seed: int = 0) -> RAECodec:
    torch.manual_seed(seed)
    cfg = dinov2_reg_base_config()
    cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads = 32, 1, 2
    encoder = DinoV2Encoder(input_size=28, config=cfg)  # 2x2 patch grid
    decoder = GeneralDecoder(
        num_patches=4,
        cfg=DecoderConfig(
            latent_dim=32, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, patch_size=16
        ),
    )
    stats = LatentStats(var=torch.rand(32, 2, 2) + 0.5, mean=torch.randn(32, 2, 2))
    return RAECodec(resolution=32, encoder=encoder, decoder=decoder, stats=stats)


def test_sd_vae_encode_stores_unscaled_posterior() -> None:
    vae = tiny_vae()
    codec = SDVAECodec("sd-vae-ft-ema", 32, vae)  # KL-f4 here: two levels
    images = torch.rand(2, 3, 32, 32)
    fields = codec.encode(images)
    with torch.no_grad():
        dist = vae.encode(images * 2 - 1).latent_dist
    torch.testing.assert_close(fields["mean"], dist.mean)
    torch.testing.assert_close(fields["std"], torch.exp(0.5 * dist.logvar))


def test_sd_vae_training_latent_formula_and_decode_scaling() -> None:
    vae = tiny_vae()
    codec = SDVAECodec("sd-vae-ft-mse", 32, vae)
    codec.latent_shape = (4, 16, 16)  # this tiny VAE downsamples by 2
    mean, std = torch.randn(2, 4, 16, 16), torch.rand(2, 4, 16, 16)
    z = codec.latent_from_stored({"mean": mean, "std": std}, generator=torch.Generator().manual_seed(5))
    eps = torch.randn(mean.shape, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(z, 0.18215 * (mean + std * eps))
    images = codec.decode(z)
    with torch.no_grad():
        ref = ((vae.decode(z / 0.18215).sample + 1) / 2).clamp(0, 1)
    torch.testing.assert_close(images, ref)
    assert images.min() >= 0 and images.max() <= 1 and SD_VAE_SCALE == 0.18215
    with pytest.raises(KeyError, match="std"):
        codec.latent_from_stored({"mean": mean})


def test_rae_encoder_drops_cls_and_registers_and_has_affine_free_norm() -> None:
    codec = tiny_rae()
    images = torch.rand(2, 3, 32, 32)
    enc = codec.encoder
    assert enc.model.layernorm.weight is None and enc.model.layernorm.bias is None
    # independent path: resize, standardise, run the transformers model, keep the last 4 tokens
    x = F.interpolate(images, size=(28, 28), mode="bicubic", align_corners=False)
    x = (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        hidden = enc.model(pixel_values=x).last_hidden_state
    assert hidden.shape[1] == 1 + 4 + 4
    tokens = hidden[:, 5:]
    # an affine-free LayerNorm leaves every token with zero mean and unit variance
    torch.testing.assert_close(tokens.mean(-1), torch.zeros(2, 4), atol=1e-5, rtol=0)
    torch.testing.assert_close(tokens.var(-1, unbiased=False), torch.ones(2, 4), atol=1e-3, rtol=0)
    feats = tokens.transpose(1, 2).reshape(2, 32, 2, 2)
    expected = (feats - codec.stats.mean) / torch.sqrt(codec.stats.var + 1e-5)
    got = codec.encode(images)
    assert set(got) == {"latent"}
    torch.testing.assert_close(got["latent"], expected, atol=1e-5, rtol=1e-5)
    assert codec.latent_from_stored(got) is got["latent"]


def test_rae_decode_shape_range_and_denormalisation() -> None:
    codec = tiny_rae()
    z = torch.randn(2, 32, 2, 2)
    images = codec.decode(z)
    assert images.shape == (2, 3, 32, 32) and images.min() >= 0 and images.max() <= 1
    raw = z * torch.sqrt(codec.stats.var + 1e-5) + codec.stats.mean
    with torch.no_grad():
        pix = codec.decoder.decode_features(raw)
    ref = pix * torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) + torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    torch.testing.assert_close(images, ref.clamp(0, 1))
    with pytest.raises(ValueError, match="latents must be"):
        codec.decode(torch.randn(2, 32, 3, 3))


def test_latent_stats_file_roundtrip_without_mean(tmp_path) -> None:
    var = torch.rand(8, 2, 2) + 0.1
    torch.save({"mean": None, "var": var}, tmp_path / "stat.pt")
    stats = LatentStats.load(tmp_path / "stat.pt")
    z = torch.randn(3, 8, 2, 2)
    torch.testing.assert_close(stats.normalize(z), z / torch.sqrt(var + 1e-5))
    torch.testing.assert_close(stats.denormalize(stats.normalize(z)), z)
    torch.save({"mean": None}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="var"):
        LatentStats.load(tmp_path / "bad.pt")


def test_build_codec_rejects_bad_arguments(tmp_path) -> None:
    with pytest.raises(ValueError, match="unknown codec"):
        build_codec("sd-vae-ft-xyz", 256, random_init=True)
    with pytest.raises(ValueError, match="resolution"):
        build_codec("sd-vae-ft-ema", 300, random_init=True)
    with pytest.raises(FileNotFoundError, match="vae"):
        build_codec("sd-vae-ft-ema", 256, weights={"vae": tmp_path / "missing.safetensors"})


def test_build_sd_vae_random_init_shapes() -> None:
    codec = build_codec("sd-vae-ft-ema", 512, random_init=True)
    assert codec.name == "sd-vae-ft-ema" and codec.resolution == 512 and codec.latent_shape == (4, 64, 64)
    assert tuple(codec.vae.config.block_out_channels) == (128, 256, 512, 512)


@pytest.mark.slow
def test_full_size_codecs_encode_decode_shapes() -> None:
    sd = build_codec("sd-vae-ft-ema", 256, random_init=True)
    fields = sd.encode(torch.rand(1, 3, 256, 256))
    assert fields["mean"].shape == (1, 4, 32, 32)
    assert sd.decode(sd.latent_from_stored(fields)).shape == (1, 3, 256, 256)
    rae = build_codec("rae-dinov2-b", 256, random_init=True)
    assert rae.latent_shape == (768, 16, 16)
    z = rae.encode(torch.rand(1, 3, 256, 256))["latent"]
    assert z.shape == (1, 768, 16, 16)
    assert rae.decode(z).shape == (1, 3, 256, 256)
