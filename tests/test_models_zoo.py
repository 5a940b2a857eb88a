"""The model registry: names, spec facts, and loading checkpoints by name."""

from __future__ import annotations

import pytest
import torch

from mixflow_bench.flow.conventions import TimeConvention
from mixflow_bench.models.zoo import ZOO, build_model, get_spec, list_models
from mixflow_bench.sampling.models import resolve_model

torch.set_num_threads(1)

EXPECTED_NAMES = {f"sit-{s}-{p}" for s in ("s", "b", "l", "xl") for p in (2, 4, 8)} | {
    "sit-xl-2-512",
    "repa-sit-xl-2",
    "rae-dith-xl-256",
    "rae-dith-xl-512",
    "rae-dith-s-256",
    "rae-dith-s-512",
    "gmflow-dit-xl-2",
} | {"mixed-source-cifar10", "mixed-source-ffhq-64", "mixed-source-afhqv2-64"} | {"toy-mlp"}


def test_names() -> None:
    assert set(list_models()) == EXPECTED_NAMES == set(ZOO)


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(KeyError, match="rae-dith-xl-256"):
        get_spec("sit-xxl-2")


@pytest.mark.parametrize(
    ("name", "convention", "latent", "checkpoint", "decoder"),
    [
        ("sit-xl-2", TimeConvention.DATA_AT_1, (4, 32, 32), "sit-xl-2-256", "sd-vae-ft-ema"),
        ("sit-xl-2-512", TimeConvention.DATA_AT_1, (4, 64, 64), None, "sd-vae-ft-ema"),
        ("repa-sit-xl-2", TimeConvention.DATA_AT_0, (4, 32, 32), "repa-sit-xl-2-256", "sd-vae-ft-ema"),
        ("rae-dith-xl-256", TimeConvention.DATA_AT_0, (768, 16, 16), "rae-dith-xl-256", "rae-dinov2-b"),
        ("rae-dith-xl-512", TimeConvention.DATA_AT_0, (768, 32, 32), "rae-dith-xl-512", "rae-dinov2-b"),
        ("rae-dith-s-256", TimeConvention.DATA_AT_0, (768, 16, 16), "rae-dith-s-256", "rae-dinov2-b"),
        ("rae-dith-s-512", TimeConvention.DATA_AT_0, (768, 32, 32), "rae-dith-s-512", "rae-dinov2-b"),
    ],
)
def test_spec_facts_and_model_agree(name, convention, latent, checkpoint, decoder) -> None:
    spec = get_spec(name)
    assert (spec.convention, spec.latent_shape, spec.checkpoint, spec.decoder) == (
        convention,
        latent,
        checkpoint,
        decoder,
    )
    assert spec.num_classes == 1000
    with torch.device("meta"):
        model = spec.build()
    assert model.convention is spec.convention and model.num_classes == 1000
    assert tuple(model.x_embedder.proj.weight.shape[1:2]) == (latent[0],)
    assert model.x_embedder.input_size == latent[1]


def test_sampler_defaults() -> None:
    sde = {"sampler": "sde", "steps": 250, "last_step_size": 0.04, "labels": "uniform", "precision": "tf32"}
    assert get_spec("sit-xl-2").sampler_defaults == {**sde, "quantize": "round"}
    assert get_spec("repa-sit-xl-2").sampler_defaults == {**sde, "quantize": "truncate"}
    assert (get_spec("sit-xl-2").family, get_spec("repa-sit-xl-2").family) == ("sit", "repa")
    for res in (256, 512):
        for size in ("xl", "s"):
            spec = get_spec(f"rae-dith-{size}-{res}")
            assert spec.family == "rae"
            assert spec.sampler_defaults == {
                "sampler": "rae-euler",
                "steps": 50,
                "time_shift": "auto",
                "labels": "equal",
                "quantize": "truncate",
                "precision": "tf32",
            }


def test_build_model_loads_ema_checkpoint_strictly(tmp_path) -> None:
    source = build_model("sit-s-8")
    with torch.no_grad():
        for p in source.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    torch.save({"ema": source.state_dict(), "opt": {}}, tmp_path / "ckpt.pt")
    loaded = build_model("sit-s-8", weights_path=tmp_path / "ckpt.pt")
    for k, v in source.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    torch.save(source.state_dict(), tmp_path / "raw.pt")
    assert torch.equal(build_model("sit-s-8", weights_path=tmp_path / "raw.pt").pos_embed, source.pos_embed)


def test_build_model_rejects_mismatched_checkpoint(tmp_path) -> None:
    torch.save(build_model("sit-s-8").state_dict(), tmp_path / "s8.pt")
    with pytest.raises(RuntimeError, match="sit-s-4"):
        build_model("sit-s-4", weights_path=tmp_path / "s8.pt")
    with pytest.raises(FileNotFoundError):
        build_model("sit-s-8", weights_path=tmp_path / "none.pt")
    with pytest.raises(ValueError, match="no released checkpoint"):
        resolve_model("sit-s-8")  # the released weights of a model that has none


def test_overrides_reach_the_architecture() -> None:
    with torch.device("meta"):
        model = build_model("sit-xl-2", attention="math")
    assert all(b.attn.attention == "math" for b in model.blocks)
