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


@pytest.mark.parametrize("form", ["lightning", "stripped", "flat"])
def test_every_released_form_loads_the_ema_weights_strictly(tmp_path, form):
    """The .ckpt as Lightning writes it (state_dict beside loops, callbacks, optimizer and scheduler states), the
    stripped {"state_dict": ...} and the flat prefixed module state dict all give the EMA velocity weights, which
    the official sampler integrates with (``model = self.ema`` when ``use_ema``)."""
    from mixflow_bench.rehearsal.artifacts import mixed_source_checkpoint

    path = tmp_path / "released.ckpt"
    path.write_bytes(mixed_source_checkpoint(TINY, form, seed=3))
    state = torch.load(path, weights_only=True)
    state = state.get("state_dict", state)
    ema = {k[len("ema.module."):]: v for k, v in state.items() if k.startswith("ema.module.")}
    raw = {k[len("denoiser."):]: v for k, v in state.items() if k.startswith("denoiser.")}
    assert not torch.equal(ema["map_layer0.weight"], raw["map_layer0.weight"])
    model = songunet(TINY)
    load_released_checkpoint(model, path)  # EMA weights by default
    for name, value in model.state_dict().items():
        assert torch.equal(value, ema[name]), name
    load_released_checkpoint(model, path, which="denoiser")
    assert torch.equal(model.map_layer0.weight, raw["map_layer0.weight"])
    x, t = torch.randn(2, 3, 16, 16), torch.rand(2)
    assert model.eval()(x, t).shape == (2, 3, 16, 16)


@pytest.mark.parametrize("form", ["lightning", "stripped", "flat"])
def test_download_check_accepts_every_released_form(tmp_path, monkeypatch, form):
    """``download``'s content check reads the file as the registry's layout says and compares the selected
    velocity weights with the model's names and shapes."""
    from mixflow_bench.hub import checkpoint as hub_checkpoint
    from mixflow_bench.hub.registry import get_artifact
    from mixflow_bench.rehearsal.artifacts import mixed_source_checkpoint

    shapes = {k: tuple(v.shape) for k, v in songunet(TINY).state_dict().items()}
    monkeypatch.setattr(hub_checkpoint, "expected_shapes", lambda name: shapes)
    path = tmp_path / "mixflow_cifar10.ckpt"
    path.write_bytes(mixed_source_checkpoint(TINY, form))
    art = get_artifact("mixed-source-cifar10")
    assert art.layout == "lightning-ema"
    hub_checkpoint.sanity_check(art, path)
    wrong = {k: v for k, v in shapes.items() if "aux_conv" not in k}
    monkeypatch.setattr(hub_checkpoint, "expected_shapes", lambda name: wrong)
    with pytest.raises(hub_checkpoint.IntegrityError, match="unexpected"):
        hub_checkpoint.sanity_check(art, path)


def test_a_file_that_is_no_mixed_source_checkpoint_is_one_error_naming_its_keys(tmp_path):
    from mixflow_bench.hub import IntegrityError, load_state_dict

    state = _lightning(songunet(TINY).state_dict(), {"conv_in.weight": torch.zeros(1)})
    state["model.head.weight"] = torch.zeros(2)
    path = tmp_path / "other.ckpt"
    torch.save({"state_dict": state, "epoch": 1}, path)
    with pytest.raises(IntegrityError, match=r"not a κ-FC mixed-source checkpoint: keys \['model.head.weight'\]"):
        load_state_dict(path, layout="lightning-ema")
    torch.save({"state_dict": {"noise_predictor.network.conv_in.weight": torch.zeros(1)}}, path)
    with pytest.raises(IntegrityError, match="holds no velocity network"):
        load_state_dict(path, layout="lightning-ema")


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
