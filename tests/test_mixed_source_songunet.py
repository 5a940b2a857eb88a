"""The κ-FC mixed-source SongUNet: released naming, strict loading of Lightning checkpoints, clear mismatches."""

from __future__ import annotations

import pytest
import torch

from mixflow_bench.models.songunet import (
    CheckpointMismatch,
    SongUNetConfig,
    checkpoint_resolution,
    load_released_checkpoint,
    load_velocity_state,
    songunet,
    split_lightning_state,
)
from mixflow_bench.models.zoo import build_model, get_spec

torch.set_num_threads(1)
TINY = SongUNetConfig(16, model_channels=32, channel_mult=(1, 2), num_blocks=1, attn_resolutions=(8,), dropout=0.0)


def _lightning(velocity: dict, source: dict) -> dict:
    """A state dict laid out as the released Lightning checkpoints: denoiser, its EMA, and the source network."""
    state = {f"denoiser.{k}": v for k, v in velocity.items()}
    state |= {f"ema.module.{k}": v + 1.0 for k, v in velocity.items()}
    state["ema.n_averaged"] = torch.tensor(7)
    state |= {f"noise_predictor.network.{k}": v for k, v in source.items()}
    return state


def test_released_names_of_the_cifar10_network():
    with torch.device("meta"):
        model = songunet("cifar10")
    names = set(model.state_dict())
    assert sum(p.numel() for p in model.parameters()) == 55_732_739  # EDM's DDPM++ CIFAR-10 network
    for key in ("map_layer0.weight", "enc.32x32_conv.weight", "enc.16x16_down.skip.resample_filter",
                "enc.16x16_block0.qkv.weight", "dec.8x8_in0.proj.bias", "dec.32x32_up.conv0.resample_filter",
                "dec.16x16_block4.norm2.weight", "dec.32x32_aux_norm.weight", "dec.32x32_aux_conv.weight"):
        assert key in names, key
    assert "map_noise.freqs" not in names and not any(k.startswith("map_label") for k in names)
    assert checkpoint_resolution(model.state_dict()) == 32


def test_strict_load_from_a_lightning_state(tmp_path):
    torch.manual_seed(0)
    source = {"conv_in.weight": torch.randn(32, 3, 3, 3), "conv_out.bias": torch.randn(6)}
    donor = songunet(TINY)
    path = tmp_path / "released.ckpt"
    torch.save({"state_dict": _lightning(donor.state_dict(), source), "epoch": 3}, path)
    model = songunet(TINY)
    load_released_checkpoint(model, path)  # EMA weights by default
    torch.testing.assert_close(model.map_layer0.weight, donor.map_layer0.weight + 1.0)
    load_released_checkpoint(model, path, which="denoiser")
    torch.testing.assert_close(model.map_layer0.weight, donor.map_layer0.weight)
    x, t = torch.randn(2, 3, 16, 16), torch.rand(2)
    assert model.eval()(x, t).shape == (2, 3, 16, 16)
    parts = split_lightning_state(torch.load(path)["state_dict"])
    assert set(parts["source"]) == set(source) and set(parts["velocity"]) == set(donor.state_dict())


def test_another_resolution_is_a_clear_error():
    donor = songunet(SongUNetConfig(32, model_channels=32, channel_mult=(1, 2), num_blocks=1, attn_resolutions=(8,)))
    with pytest.raises(CheckpointMismatch, match="is a 32x32 model; this network is 16x16"):
        load_velocity_state(songunet(TINY), _lightning(donor.state_dict(), {}))
    broken = {k: v for k, v in songunet(TINY).state_dict().items() if "aux_conv" not in k}
    with pytest.raises(CheckpointMismatch, match="does not fit SongUNet"):
        load_velocity_state(songunet(TINY), broken)


def test_zoo_entries():
    spec = get_spec("mixed-source-ffhq-64")
    assert spec.latent_shape == (3, 64, 64) and spec.checkpoint == "mixed-source-ffhq-64" and spec.decoder is None
    with torch.device("meta"):
        model = spec.build()
    assert model.config.channel_mult == (1, 2, 2, 2) and model.config.dropout == 0.05
    assert get_spec("mixed-source-afhqv2-64").build.args[0].dropout == 0.25


def test_zoo_loads_through_the_spec_reader(tmp_path):
    path = tmp_path / "x.ckpt"
    torch.save({"state_dict": _lightning(songunet(TINY).state_dict(), {})}, path)
    with torch.device("meta"), pytest.raises(CheckpointMismatch, match="is a 16x16 model; this network is 32x32"):
        build_model("mixed-source-cifar10", weights_path=path)


def test_sample_cli_refuses_a_checkpoint_of_another_resolution(tmp_path):
    from click.testing import CliRunner

    from mixflow_bench.cli.sample_cmd import command

    path = tmp_path / "ffhq-like.ckpt"
    torch.save({"state_dict": _lightning(songunet(TINY).state_dict(), {})}, path)
    result = CliRunner().invoke(command, ["--model", "mixed-source-cifar10", "--checkpoint", str(path), "--num", "1",
                                          "--out", str(tmp_path / "x.npz")])
    assert result.exit_code != 0 and "is a 16x16 model; this network is 32x32" in result.output
    assert "Traceback" not in result.output


def test_registry_points_at_the_released_checkpoints():
    from mixflow_bench.hub.registry import get_artifact

    for name, repo, filename in (("mixed-source-cifar10", "nazirnayal98/MixFlow-CIFAR10", "mixflow_cifar10.ckpt"),
                                 ("mixed-source-ffhq-64", "nazirnayal98/MixFlow-FFHQ-64x64", "mixflow_ffhqv2_64x64"),
                                 ("mixed-source-afhqv2-64", "nazirnayal98/MixFlow-AFHQ-64x64", "mixflow_afhqv2_64x64")):
        artifact = get_artifact(name)
        assert artifact.kind == "checkpoint" and (artifact.hf.repo_id, artifact.hf.filename) == (repo, filename)
        assert get_spec(name).checkpoint == name
