"""State-dict layouts of the zoo against the official checkpoints' documented keys and shapes.

The expected layouts live in tests/fixtures/model_layouts/*.json (expanded from the reference listings by
generate.py there). Everything is built on the meta device, so XL models cost no memory.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from mixflow_bench.models.rae_stage1 import GeneralDecoder
from mixflow_bench.models.zoo import get_spec

LAYOUT_DIR = Path(__file__).parent / "fixtures" / "model_layouts"

# fixture -> builder of the matching module
BUILDERS = {
    "sit-xl-2-256": lambda: get_spec("sit-xl-2").build(),
    "sit-xl-2-512": lambda: get_spec("sit-xl-2-512").build(),
    "repa-sit-xl-2-256": lambda: get_spec("repa-sit-xl-2").build(),
    "rae-dith-xl-256": lambda: get_spec("rae-dith-xl-256").build(),
    "rae-dith-xl-512": lambda: get_spec("rae-dith-xl-512").build(),
    "rae-dith-s-256": lambda: get_spec("rae-dith-s-256").build(),
    "rae-decoder-256": lambda: GeneralDecoder(num_patches=256),
    "rae-decoder-512": lambda: GeneralDecoder(num_patches=1024),
}


def load_layout(name: str) -> dict:
    return json.loads((LAYOUT_DIR / f"{name}.json").read_text())


def build_meta(name: str) -> torch.nn.Module:
    with torch.device("meta"):
        return BUILDERS[name]()


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_layout_matches_official_keys_and_shapes(name: str) -> None:
    layout = load_layout(name)
    model = build_meta(name)
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert len(layout["tensors"]) == layout["num_tensors"]
    assert sorted(set(ours) - set(layout["tensors"])) == []
    assert sorted(set(layout["tensors"]) - set(ours)) == []
    mismatched = {k: (ours[k], s) for k, s in layout["tensors"].items() if ours[k] != s}
    assert mismatched == {}
    assert sum(math.prod(s) for s in ours.values()) == layout["num_elements"]


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_strict_load_of_documented_state_dict(name: str) -> None:
    layout = load_layout(name)
    model = build_meta(name)
    state = {k: torch.empty(s, device="meta") for k, s in layout["tensors"].items()}
    result = model.load_state_dict(state, strict=True, assign=True)
    assert list(result.missing_keys) == [] and list(result.unexpected_keys) == []


def test_strict_load_rejects_a_missing_rope_table() -> None:
    layout = load_layout("rae-dith-xl-256")
    model = build_meta("rae-dith-xl-256")
    state = {k: torch.empty(s, device="meta") for k, s in layout["tensors"].items() if "freqs_sin" not in k}
    with pytest.raises(RuntimeError, match="freqs_sin"):
        model.load_state_dict(state, strict=True, assign=True)


def test_parameter_counts_match_reference_numbers() -> None:
    def total(name: str) -> int:
        return sum(v.numel() for v in build_meta(name).state_dict().values())

    assert total("sit-xl-2-256") == 675_129_632
    assert total("repa-sit-xl-2-256") == 683_242_512
    dith = build_meta("rae-dith-xl-256")
    assert sum(p.numel() for p in dith.parameters() if p.requires_grad) == 838_380_628
    # pos_embed and the Fourier frequencies are frozen parameters, as in the official module
    assert not dith.pos_embed.requires_grad and not dith.t_embedder.W.requires_grad
    repa = build_meta("repa-sit-xl-2-256")
    without_projector = sum(
        v.numel() for k, v in repa.state_dict().items() if not k.startswith("projectors.")
    )
    assert without_projector == 675_111_184


def test_sit_learn_sigma_final_linear_has_32_outputs() -> None:
    model = build_meta("sit-xl-2-256")
    assert tuple(model.final_layer.linear.weight.shape) == (32, 1152)
    assert model.out_channels == 8 and model.in_channels == 4
