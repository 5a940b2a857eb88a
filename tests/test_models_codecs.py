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

pytestmark = pytest.mark.float_sensitive  # also run with OMP_NUM_THREADS=1 in CI (.ci/run)

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


# --- real weights in every naming the hubs serve, loaded through the project's loaders ------------------------
# The files are built from the architectures (tiny configs), renamed to each naming in use, and laid out like a
# Hugging Face cache snapshot (blobs + symlinks), so the loaders see what a hub download returns.

VAE_OLD_ATTENTION = {".to_q.": ".query.", ".to_k.": ".key.", ".to_v.": ".value.", ".to_out.0.": ".proj_attn."}
DINOV2_4X_NAMES = {
    "attention.q_proj.": "attention.attention.query.",
    "attention.k_proj.": "attention.attention.key.",
    "attention.v_proj.": "attention.attention.value.",
    "attention.o_proj.": "attention.output.dense.",
}


def _rename(state: dict, table: dict[str, str]) -> dict:
    out = {}
    for key, value in state.items():
        for new, old in table.items():
            key = key.replace(new, old)
        out[key] = value.detach().clone().contiguous()
    return out


def _snapshot(root, repo: str, files: dict[str, object]):
    """Write ``files`` (name -> bytes or state dict) as a HF cache snapshot; returns the snapshot folder."""
    import hashlib
    import io
    import json

    from safetensors.torch import save as save_safetensors

    base = root / f"models--{repo.replace('/', '--')}"
    (base / "blobs").mkdir(parents=True)
    snap = base / "snapshots" / ("0" * 40)
    snap.mkdir(parents=True)
    for name, content in files.items():
        if isinstance(content, dict) and name.endswith(".json"):
            data = json.dumps(content).encode()
        elif isinstance(content, dict) and name.endswith(".safetensors"):
            data = save_safetensors(content)
        elif isinstance(content, dict):
            buf = io.BytesIO()
            torch.save(content, buf)
            data = buf.getvalue()
        else:
            data = content
        blob = base / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snap / name).symlink_to(f"../../blobs/{blob.name}")
    return snap


def _tiny_vae_config() -> dict:
    cfg = sd_vae_config()
    cfg.update(
        block_out_channels=[32, 32],
        down_block_types=["DownEncoderBlock2D"] * 2,
        up_block_types=["UpDecoderBlock2D"] * 2,
        layers_per_block=1,
    )
    return {"_class_name": "AutoencoderKL", **cfg}


def _vae_outputs(vae) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(1, 3, 16, 16, generator=gen) * 2 - 1
    z = torch.randn(1, 4, 8, 8, generator=gen)
    with torch.no_grad():
        return vae.encode(x).latent_dist.mean, vae.decode(z).sample


@pytest.mark.parametrize("naming", ["diffusers-old-attention", "diffusers-current"])
@pytest.mark.parametrize("weights_file", ["diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"])
def test_sd_vae_loads_every_hub_naming_strictly(tmp_path, naming: str, weights_file: str) -> None:
    reference = tiny_vae()
    state = reference.state_dict()
    if naming == "diffusers-old-attention":
        state = _rename(state, VAE_OLD_ATTENTION)
        assert any(".proj_attn." in k for k in state) and not any(".to_q." in k for k in state)
    snap = _snapshot(
        tmp_path, "stabilityai/sd-vae-ft-ema", {"config.json": _tiny_vae_config(), weights_file: state}
    )
    expected = _vae_outputs(reference)
    for given in (snap / weights_file, snap):  # the file a hub download returns, and the snapshot folder
        codec = build_codec("sd-vae-ft-ema", 256, weights={"vae": given})
        assert tuple(codec.vae.config.block_out_channels) == (32, 32)
        for got, want in zip(_vae_outputs(codec.vae), expected):
            torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_sd_vae_bare_file_gets_the_sd_vae_config(tmp_path, monkeypatch) -> None:
    from safetensors.torch import save_file

    import mixflow_bench.models.autoencoders as autoencoders

    tiny = {k: v for k, v in _tiny_vae_config().items() if k != "_class_name"}
    monkeypatch.setattr(autoencoders, "sd_vae_config", lambda: dict(tiny))
    reference = tiny_vae()
    save_file(_rename(reference.state_dict(), VAE_OLD_ATTENTION), tmp_path / "vae-ft-ema.safetensors")
    codec = build_codec("sd-vae-ft-ema", 256, weights={"vae": tmp_path / "vae-ft-ema.safetensors"})
    for got, want in zip(_vae_outputs(codec.vae), _vae_outputs(reference)):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


@pytest.mark.parametrize("fault", ["missing", "unexpected", "mis-shaped"])
def test_sd_vae_load_fails_loudly_on_a_bad_state_dict(tmp_path, fault: str) -> None:
    state = _rename(tiny_vae().state_dict(), VAE_OLD_ATTENTION)
    if fault == "missing":
        state.pop("decoder.conv_out.bias")
    elif fault == "unexpected":
        state["decoder.extra.weight"] = torch.zeros(2)
    else:
        state["decoder.conv_out.bias"] = torch.zeros(5)
    snap = _snapshot(
        tmp_path, "stabilityai/sd-vae-ft-mse",
        {"config.json": _tiny_vae_config(), "diffusion_pytorch_model.safetensors": state},
    )  # fmt: skip
    with pytest.raises((RuntimeError, ValueError), match="conv_out|extra|size"):
        build_codec("sd-vae-ft-mse", 256, weights={"vae": snap / "diffusion_pytorch_model.safetensors"})


def _tiny_dinov2_config():
    from transformers import Dinov2WithRegistersConfig

    return Dinov2WithRegistersConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=28, patch_size=14,
        num_register_tokens=4, layer_norm_eps=1e-6, layerscale_value=1.0, qkv_bias=True,
    )  # fmt: skip


def _dinov2_reference() -> tuple[DinoV2Encoder, dict]:
    torch.manual_seed(4)
    from transformers import Dinov2WithRegistersModel

    model = Dinov2WithRegistersModel(_tiny_dinov2_config()).eval()
    with torch.no_grad():
        for p in model.parameters():  # also move the LayerNorm affines away from (1, 0)
            p.add_(0.05 * torch.randn_like(p))
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    direct = DinoV2Encoder(input_size=28, config=_tiny_dinov2_config())  # affine-free final norm: no such keys
    direct.model.load_state_dict({k: v for k, v in state.items() if not k.startswith("layernorm.")}, strict=True)
    return direct, state


@pytest.mark.parametrize("naming", ["transformers-4.x", "transformers-5.x"])
@pytest.mark.parametrize("weights_file", ["model.safetensors", "pytorch_model.bin"])
def test_dinov2_loads_every_hub_naming_strictly(tmp_path, naming: str, weights_file: str) -> None:
    reference, state = _dinov2_reference()
    if naming == "transformers-4.x":
        state = _rename(state, DINOV2_4X_NAMES)
        assert "encoder.layer.0.attention.attention.query.weight" in state
    else:
        assert "encoder.layer.0.attention.q_proj.weight" in state
    config = _tiny_dinov2_config().to_dict()
    snap = _snapshot(tmp_path, "facebook/dinov2-with-registers-base", {"config.json": config, weights_file: state})
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    expected = reference(images)
    for given in (snap / weights_file, snap):
        encoder = DinoV2Encoder.from_pretrained(given, input_size=28)
        assert encoder.model.layernorm.weight is None  # RAE's affine-free final norm
        torch.testing.assert_close(encoder(images), expected, rtol=1e-5, atol=1e-5)


def test_dinov2_bare_file_missing_tensor_and_wrong_model_are_errors(tmp_path, monkeypatch) -> None:
    from safetensors.torch import save_file

    import mixflow_bench.models.rae_stage1 as rae_stage1

    reference, state = _dinov2_reference()
    legacy = _rename(state, DINOV2_4X_NAMES)
    save_file(legacy, tmp_path / "dinov2.safetensors")
    monkeypatch.setattr(rae_stage1, "dinov2_reg_base_config", _tiny_dinov2_config)
    images = torch.rand(1, 3, 28, 28)
    encoder = DinoV2Encoder.from_pretrained(tmp_path / "dinov2.safetensors", input_size=28)
    torch.testing.assert_close(encoder(images), reference(images), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="hidden_size 32 \\(expected 768\\)"):
        DinoV2Encoder.from_pretrained(tmp_path / "dinov2.safetensors", input_size=28, expect=dinov2_reg_base_config())
    legacy.pop("encoder.layer.1.norm2.bias")
    save_file(legacy, tmp_path / "broken.safetensors")
    with pytest.raises(RuntimeError, match="missing keys: encoder.layer.1.norm2.bias"):
        DinoV2Encoder.from_pretrained(tmp_path / "broken.safetensors", input_size=28)


def test_dinov2_key_mapping_for_4x_installs_gives_the_4x_names(tmp_path) -> None:
    """The mapping a transformers 4.x install uses for 5.x files yields exactly what 5.x itself saves (4.x names)."""
    import re

    from safetensors import safe_open
    from transformers import Dinov2WithRegistersModel

    from mixflow_bench.models.rae_stage1 import _DINOV2_5X_TO_4X

    _, state = _dinov2_reference()
    model = Dinov2WithRegistersModel(_tiny_dinov2_config())
    model.load_state_dict(state, strict=True)
    model.save_pretrained(tmp_path)  # transformers 5 writes the 4.x names
    with safe_open(str(tmp_path / "model.safetensors"), "pt") as f:
        saved = set(f.keys())
    mapped = set()
    for key in state:
        for pattern, replacement in _DINOV2_5X_TO_4X.items():
            key = re.sub(pattern, replacement, key)
        mapped.add(key)
    assert mapped == saved


@pytest.mark.parametrize("naming", ["transformers-4.x", "transformers-5.x"])
def test_rae_codec_loads_the_hub_dinov2_file(tmp_path, monkeypatch, naming: str) -> None:
    """``build_codec`` on the file a hub download returns (tiny DINOv2 and decoder patched in for speed)."""
    import mixflow_bench.models.autoencoders as autoencoders
    import mixflow_bench.models.rae_stage1 as rae_stage1

    small_decoder = DecoderConfig(latent_dim=32, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64)
    monkeypatch.setattr(autoencoders, "DecoderConfig", lambda: small_decoder)
    monkeypatch.setattr(rae_stage1, "dinov2_reg_base_config", _tiny_dinov2_config)
    monkeypatch.setattr(autoencoders, "dinov2_reg_base_config", _tiny_dinov2_config, raising=False)
    reference, state = _dinov2_reference()
    if naming == "transformers-4.x":
        state = _rename(state, DINOV2_4X_NAMES)
    snap = _snapshot(
        tmp_path, "facebook/dinov2-with-registers-base",
        {"config.json": _tiny_dinov2_config().to_dict(), "model.safetensors": state},
    )  # fmt: skip
    torch.save(GeneralDecoder(num_patches=256, cfg=small_decoder).state_dict(), tmp_path / "decoder.pt")
    var = torch.rand(32, 16, 16) + 0.5
    torch.save({"mean": None, "var": var}, tmp_path / "stat.pt")
    weights = {"encoder": snap / "model.safetensors", "decoder": tmp_path / "decoder.pt", "stats": tmp_path / "stat.pt"}
    codec = build_codec("rae-dinov2-b", 256, weights=weights)
    images = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(6))
    reference.input_size = 224
    expected = reference(images) / torch.sqrt(var + 1e-5)
    torch.testing.assert_close(codec.encode(images)["latent"], expected, rtol=1e-5, atol=1e-5)
