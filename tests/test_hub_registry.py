"""Registry contents against the reference notes and library constants; recipe scanning; safe loading."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mixflow_bench.hub import (
    IntegrityError,
    artifact_names,
    get_artifact,
    load_state_dict,
    registry_overrides,
)
from mixflow_bench.hub.testserver import FaultyServer, ServedFile

EXPECTED_NAMES = {
    "sit-xl-2-256",
    "repa-sit-xl-2-256",
    "rae-decoder-256",
    "rae-decoder-512",
    "rae-stats-256",
    "rae-stats-512",
    "rae-dith-xl-256",
    "rae-dith-xl-512",
    "rae-dith-s-256",
    "rae-dith-s-512",
    "dinov2-reg-b",
    "sd-vae-ft-ema",
    "sd-vae-ft-mse",
    "adm-ref-imagenet256",
    "adm-ref-imagenet512",
    "inception-torch-fidelity",
    "dinov2-vit-l",
} | {"mixed-source-cifar10", "mixed-source-ffhq-64", "mixed-source-afhqv2-64", "cifar10-python", "gmflow-dit"}


def test_registry_has_exactly_the_named_artifacts():
    assert set(artifact_names()) == EXPECTED_NAMES


def test_direct_urls_match_the_reference_notes():
    sit = get_artifact("sit-xl-2-256")
    assert sit.urls[0].startswith(
        "https://www.dl.dropboxusercontent.com/scl/fi/as9oeomcbub47de5g4be0/SiT-XL-2-256.pt"
    )
    assert "rlkey=uxzxmpicu46coq3msb17b9ofa" in sit.urls[0]
    repa = get_artifact("repa-sit-xl-2-256")
    assert "/cxedbs4da5ugjq5wg3zrg/last.pt?rlkey=8otgrdkno0nd89po3dpwngwcc&st=apcc645o" in repa.urls[0]
    base = "https://openaipublic.blob.core.windows.net/diffusion/jul-2021/ref_batches/imagenet"
    assert get_artifact("adm-ref-imagenet256").urls == (f"{base}/256/VIRTUAL_imagenet256_labeled.npz",)
    assert get_artifact("adm-ref-imagenet512").urls == (f"{base}/512/VIRTUAL_imagenet512.npz",)
    # nothing published: no invented sizes or hashes
    for name in ("sit-xl-2-256", "repa-sit-xl-2-256", "rae-stats-256", "adm-ref-imagenet256"):
        assert get_artifact(name).size is None and get_artifact(name).sha256 is None


def test_inception_url_equals_the_librarys_constant():
    from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3

    tf = get_artifact("inception-torch-fidelity")
    assert tf.urls == (URL_INCEPTION_V3,)
    assert tf.sha256_prefix == URL_INCEPTION_V3.rsplit("-", 1)[1].split(".")[0]  # torch.hub name convention


@pytest.mark.parametrize(
    "name, repo, filename",
    [
        ("rae-decoder-256", "nyu-visionx/RAE-collections", "decoders/dinov2/wReg_base/ViTXL_n08/model.pt"),
        (
            "rae-decoder-512",
            "nyu-visionx/RAE-collections",
            "decoders/dinov2/wReg_base/ViTXL_n08_i512/model.pt",
        ),
        ("rae-stats-256", "nyu-visionx/RAE-collections", "stats/dinov2/wReg_base/imagenet1k/stat.pt"),
        ("rae-stats-512", "nyu-visionx/RAE-collections", "stats/dinov2/wReg_base/imagenet1k_512/stat.pt"),
        (
            "rae-dith-xl-256",
            "nyu-visionx/RAE-collections",
            "DiTs/Dinov2/wReg_base/ImageNet256/DiTDH-XL/stage2_model.pt",
        ),
        (
            "rae-dith-xl-512",
            "nyu-visionx/RAE-collections",
            "DiTs/Dinov2/wReg_base/ImageNet512/DiTDH-XL_ep400/stage2_model.pt",
        ),
        (
            "rae-dith-s-256",
            "nyu-visionx/RAE-collections",
            "DiTs/Dinov2/wReg_base/ImageNet256/DiTDH-S_ep14/stage2_model.pt",
        ),
        (
            "rae-dith-s-512",
            "nyu-visionx/RAE-collections",
            "DiTs/Dinov2/wReg_base/ImageNet512/DiTDH-S_ep20/stage2_model.pt",
        ),
        ("dinov2-reg-b", "facebook/dinov2-with-registers-base", "model.safetensors"),
        ("sd-vae-ft-ema", "stabilityai/sd-vae-ft-ema", "diffusion_pytorch_model.safetensors"),
        ("sd-vae-ft-mse", "stabilityai/sd-vae-ft-mse", "diffusion_pytorch_model.safetensors"),
        ("dinov2-vit-l", "facebook/dinov2-large", "model.safetensors"),
    ],
)
def test_hugging_face_sources(name, repo, filename):
    hf = get_artifact(name).hf
    assert hf is not None and (hf.repo_id, hf.filename) == (repo, filename)


def test_overrides_validate_and_restore():
    with pytest.raises(ValueError, match="unknown field"):
        registry_overrides({"sit-xl-2-256": {"md5": "x"}}).__enter__()  # refused on entry, before any change
    with registry_overrides({"sit-xl-2-256": {"urls": ["http://127.0.0.1:1/x"]}}):
        assert get_artifact("sit-xl-2-256").urls == ("http://127.0.0.1:1/x",)
    assert "dropbox" in get_artifact("sit-xl-2-256").urls[0]
    with pytest.raises(KeyError, match="unknown artifact 'nope'"):
        get_artifact("nope")


class Recipe:
    def to_dict(self):
        return {
            "model": {"checkpoint": "rae-dith-xl-256", "decoder": "rae-decoder-256", "note": "rae"},
            "guidance": [{"guide": "rae-dith-s-256"}, {"guide": "rae-dith-xl-256"}],
            "eval": {"reference": "adm-ref-imagenet256", "steps": 50, "tags": ("sd-vae-ft-ema", 3)},
        }


def test_artifacts_for_recipe_walks_nested_values():
    from mixflow_bench.recipes.artifacts import artifacts_for_recipe

    expected = [
        "rae-dith-xl-256",
        "rae-decoder-256",
        "rae-dith-s-256",
        "adm-ref-imagenet256",
        "sd-vae-ft-ema",
    ]
    assert artifacts_for_recipe(Recipe().to_dict()) == expected
    assert artifacts_for_recipe(Recipe()) == expected
    assert artifacts_for_recipe({"keys-are-not-values": {"sit-xl-2-256": 1}}) == []


# ---------------------------------------------------------------- load_state_dict


class NotATensor:
    def __init__(self):
        self.lr = 1e-4


def test_loads_torch_and_safetensors_and_unwraps_ema(tmp_path):
    from safetensors.torch import save_file

    ema = {"w": torch.arange(6.0).reshape(2, 3), "b": torch.ones(3)}
    torch.save({"model": {"w": torch.zeros(2, 3)}, "ema": ema}, tmp_path / "train.pt")
    got = load_state_dict(tmp_path / "train.pt")
    assert set(got) == {"w", "b"} and torch.equal(got["w"], ema["w"])
    save_file(ema, str(tmp_path / "m.safetensors"))
    got = load_state_dict(tmp_path / "m.safetensors")
    assert torch.equal(got["b"], ema["b"])
    torch.save({"mean": None, "var": torch.full((4,), 2.0)}, tmp_path / "stat.pt")
    assert list(load_state_dict(tmp_path / "stat.pt")) == ["var"]


def test_refuses_pickle_that_needs_weights_only_false(tmp_path):
    torch.save({"w": torch.ones(2), "args": NotATensor()}, tmp_path / "ckpt.pt")
    with pytest.raises(IntegrityError, match="weights_only=False"):
        load_state_dict(tmp_path / "ckpt.pt")


@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.parametrize("kind", ["npz", "text", "torchscript", "truncated"])
def test_refuses_non_checkpoints(tmp_path, kind):
    path = tmp_path / "file.pt"
    if kind == "npz":
        np.savez(path.with_suffix(".npz"), arr_0=np.zeros((2, 2), np.uint8))
        path.with_suffix(".npz").rename(path)
        reason = "NumPy .npz"
    elif kind == "text":
        path.write_text("<html>Dropbox sign-in page</html>")
        reason = "not a PyTorch or safetensors"
    elif kind == "torchscript":
        torch.jit.script(torch.nn.Linear(2, 2)).save(str(path))
        reason = "TorchScript"
    else:
        torch.save({"w": torch.randn(1000)}, path)
        path.write_bytes(path.read_bytes()[:1500])
        reason = "truncated"
    with pytest.raises(IntegrityError, match=reason):
        load_state_dict(path)


def test_load_by_name_fetches_and_checks_registry_size(tmp_path, monkeypatch):
    monkeypatch.setenv("MIXFLOW_BENCH_HOME", str(tmp_path / "home"))
    sd = {"pos_embed": torch.randn(1, 4, 8)}
    torch.save(sd, tmp_path / "sit.pt")
    data = (tmp_path / "sit.pt").read_bytes()
    with FaultyServer() as server:
        server.files["/sit.pt"] = ServedFile(data)
        entry = {
            "urls": [server.url("/sit.pt")],
            "sha256": hashlib.sha256(data).hexdigest(),
            "size": len(data),
            "check": "state-dict",  # no shape check for this stand-in (expected shapes are SiT-XL/2's)
        }
        (tmp_path / "o.json").write_text(json.dumps({"sit-xl-2-256": entry}))
        monkeypatch.setenv("MIXFLOW_BENCH_REGISTRY_OVERRIDES", str(tmp_path / "o.json"))
        got = load_state_dict("sit-xl-2-256")
        assert torch.equal(got["pos_embed"], sd["pos_embed"])
        # a plain path checked against the registry entry: a different file of another size is refused
        torch.save({"pos_embed": torch.randn(1, 5, 8)}, tmp_path / "other.pt")
        with pytest.raises(IntegrityError, match=f"expects {len(data)}"):
            load_state_dict(Path(tmp_path / "other.pt"), artifact="sit-xl-2-256")
