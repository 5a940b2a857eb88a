"""`mixflow-bench sample --model NAME --random-init --num 2` runs for every model of the zoo with the sampling
rules its zoo entry declares, and with every registered sampler and guidance kind its family supports.

The cases are generated from the registries (the zoo, :mod:`mixflow_bench.samplers`): a new model or sampler is
covered without editing this file. To stay fast on a CPU, the test samples *small configurations of the same
architectures* (one block, width 64: the same classes, time conventions, outputs and latent shapes as the zoo
entries) and decodes latents with a stand-in decoder (the first three latent channels, squashed and resized to
the model's resolution) instead of the SD-VAE / RAE decoders, which alone take ~20 s per call here; the decoders
have their own tests (test_models_codecs.py).
"""

from __future__ import annotations

import dataclasses
import re
from functools import partial

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from mixflow_bench.models.zoo import ZOO
from mixflow_bench.samplers import SAMPLERS

torch.set_num_threads(1)

# a small configuration of each family's architecture (keyword arguments of its builder)
SMALL = {
    "sit": {"hidden_size": 64, "depth": 1, "num_heads": 2},
    "repa": {"hidden_size": 64, "depth": 1, "num_heads": 2, "encoder_depth": 1, "projector_dim": 32},
    "rae": {"hidden_size": (64, 64), "depth": (1, 1), "num_heads": (2, 2)},
    "gmflow": {"hidden": 64, "depth": 1, "heads": 2, "logstd_inner": 16},
    "mixed-source": {"model_channels": 16, "channel_mult": (1, 1, 1), "num_blocks": 1, "attn_resolutions": ()},
    "toy": {"hidden": 32, "depth": 1},
}
# one model per family for the sampler x guidance matrix (every model runs its own defaults below)
REPRESENTATIVES = ("sit-xl-2", "repa-sit-xl-2", "rae-dith-xl-256", "gmflow-dit-xl-2", "mixed-source-cifar10", "toy-mlp")


class StandInDecoder:
    """Latents (B, C, h, w) -> images (B, 3, R, R) in [0, 1]: the first three channels, squashed and resized."""

    def __init__(self, resolution: int) -> None:
        self.resolution = resolution

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        x = latents[:, :3] if latents.shape[1] >= 3 else latents[:, :1].expand(-1, 3, -1, -1)
        return F.interpolate(torch.sigmoid(x.float()), size=(self.resolution, self.resolution), mode="nearest")


@pytest.fixture
def small_zoo(monkeypatch):
    """Every zoo entry builds its small configuration; latent models decode with the stand-in decoder."""
    from mixflow_bench.sampling import models

    assert {spec.family for spec in ZOO.values()} <= set(SMALL), "a new family needs its small configuration here"
    for name, spec in ZOO.items():
        monkeypatch.setitem(ZOO, name, dataclasses.replace(spec, build=partial(spec.build, **SMALL[spec.family])))
    monkeypatch.setattr(
        models, "load_codec", lambda spec, random_init=False: StandInDecoder(spec.resolution) if spec.decoder else None
    )


def _sample(tmp_path, name: str, *args: str) -> tuple[np.ndarray, str]:
    from mixflow_bench.cli.main import cli

    out = tmp_path / "s.npz"
    args = ("--model", name, "--random-init", "--num", "2", "--out", str(out), *args)
    result = CliRunner().invoke(cli, ["sample", *args])
    assert result.exit_code == 0, result.output
    return np.load(out)["arr_0"], result.output


def _image_side(name: str) -> int:
    spec = ZOO[name]
    return spec.resolution if spec.resolution else spec.latent_shape[-1]


@pytest.mark.parametrize("name", list(ZOO))
def test_every_zoo_model_samples_with_its_own_rules(tmp_path, small_zoo, name) -> None:
    images, output = _sample(tmp_path, name)
    side = _image_side(name)
    assert images.shape == (2, side, side, 3) and images.dtype == np.uint8
    rules = ZOO[name].sampler_defaults
    assert re.search(rf"{rules['sampler']} {rules['steps']} steps", output), output  # its own sampler, not Euler 50


def _cases() -> list[tuple[str, str, str]]:
    cases = []
    for name in REPRESENTATIVES:
        spec = ZOO[name]
        kinds = ["none"] + ([spec.guidance_kind] if spec.guidance_kind else [])
        for sampler in SAMPLERS.values():
            if sampler.accepts(spec.output, spec.convention.value):
                cases += [(name, sampler.name, kind) for kind in kinds if kind in sampler.guidance]
    return cases


@pytest.mark.parametrize("name, sampler, guidance", _cases())
def test_every_supported_sampler_and_guidance(tmp_path, small_zoo, name, sampler, guidance) -> None:
    spec = ZOO[name]
    args = ["--sampler", sampler, "--steps", "3", "--guidance", guidance]
    if guidance != "none":
        args += ["--cfg", str(spec.guidance_scale or 2.0)]
    images, output = _sample(tmp_path, name, *args)
    side = _image_side(name)
    assert images.shape == (2, side, side, 3)
    assert f"{sampler} 3 steps" in output


def test_the_families_are_all_covered() -> None:
    assert {(c[0], c[2]) for c in _cases()} >= {
        ("sit-xl-2", "cfg"), ("rae-dith-xl-256", "autoguidance"), ("gmflow-dit-xl-2", "probabilistic"),
        ("mixed-source-cifar10", "none"),
    }  # fmt: skip
    gm = {c[1] for c in _cases() if c[0] == "gmflow-dit-xl-2" and c[2] == "probabilistic"}
    assert gm == {"gm-sde", "gm-sde2", "gm-ode", "gm-ode2"}
    mixed = {c[1] for c in _cases() if c[0] == "mixed-source-cifar10"}
    assert {"euler", "manual-heun", "rk45"} <= mixed


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "gmflow-dit-xl-2", "--sampler", "euler"], "cannot sample model gmflow-dit-xl-2"),
        (["--model", "sit-xl-2", "--sampler", "gm-ode2"], "cannot sample model sit-xl-2"),
        (["--model", "mixed-source-cifar10", "--cfg", "2"], "unconditional"),
        (["--model", "sit-xl-2", "--guidance", "probabilistic", "--cfg", "0.5"], "takes guidance"),
    ],
)
def test_incompatible_sampler_or_guidance_is_one_line(tmp_path, args, message) -> None:
    from mixflow_bench.cli.main import cli

    result = CliRunner().invoke(cli, ["sample", *args, "--random-init", "--out", str(tmp_path / "x.npz")])
    assert result.exit_code != 0 and message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "x.npz").exists()
