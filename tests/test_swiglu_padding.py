"""Zero-padding of odd SwiGLU widths on the fast sampling path: same function, aligned (and FP8-eligible) matmuls."""

from __future__ import annotations

import copy

import pytest
import torch
from tolerance import assert_close_to_scale

from mixflow_bench.models.float8 import convert_to_float8
from mixflow_bench.models.rae_dit import DiTDH, SwiGLU, pad_swiglu_hidden, swiglu_needs_padding
from mixflow_bench.sampling.fast import FastPath, prepare_model

pytestmark = pytest.mark.float_sensitive  # also run with OMP_NUM_THREADS=1 in CI (.ci/run)


def small_dith() -> DiTDH:
    """A DiT^DH whose trunk SwiGLU is odd (int(2/3 * 128) = 85) and whose head SwiGLU is 128 wide."""
    torch.manual_seed(0)
    model = DiTDH(input_size=4, in_channels=8, hidden_size=(32, 48), depth=(1, 1), num_heads=(2, 2), num_classes=10)
    with torch.no_grad():
        for p in model.parameters():  # random weights: the zeroed adaLN and output would hide any difference
            p.normal_(0, 0.3)
    return model.double()


def test_padded_swiglu_is_the_same_function_in_float64() -> None:
    torch.manual_seed(1)
    mlp = SwiGLU(24, 85).double()
    x = torch.randn(3, 7, 24, dtype=torch.float64)
    before = mlp(x)
    assert mlp.pad_hidden(16)
    assert (mlp.w12.out_features, mlp.w3.in_features) == (2 * 96, 96)
    assert_close_to_scale(mlp(x), before, ulps=64)  # float64 rounding of the reordered width-96 sums
    assert not mlp.pad_hidden(16)  # already aligned: unchanged


def test_padded_model_matches_and_the_original_keeps_its_state_dict() -> None:
    model = small_dith()
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    x = torch.randn(2, 8, 4, 4, dtype=torch.float64)
    t, y = torch.tensor([0.2, 0.9], dtype=torch.float64), torch.tensor([3, 7])
    ref = model(x, t, y)
    assert swiglu_needs_padding(model)
    padded = copy.deepcopy(model)
    assert pad_swiglu_hidden(padded) == 1  # the trunk's 85; the head's 128 is aligned already
    assert not swiglu_needs_padding(padded)
    # float64 rounding relative to the output's magnitude (about 6e3): the padded matmuls sum in another order
    assert_close_to_scale(padded(x, t, y), ref, ulps=256)
    assert {k: v.shape for k, v in model.state_dict().items()} == shapes


def test_prepare_model_pads_a_copy_on_the_bf16_path_only() -> None:
    model = small_dith().float()
    exact = prepare_model(model, FastPath.reference())
    assert exact is model and swiglu_needs_padding(exact)  # the exact path runs the model as it is
    fast = prepare_model(model, FastPath(precision="bf16", compile=False))
    assert fast is not model and not swiglu_needs_padding(fast)
    assert swiglu_needs_padding(model)  # the caller's model is untouched
    x, t, y = torch.randn(2, 8, 4, 4), torch.tensor([0.2, 0.9]), torch.tensor([3, 7])
    with torch.no_grad():
        assert_close_to_scale(fast(x, t, y), model(x, t, y), ulps=64)  # float32 rounding of the padded sums


@pytest.mark.parametrize("pad", [False, True])
def test_padding_makes_the_odd_linears_fp8_eligible(pad: bool) -> None:
    model = small_dith().float()
    if pad:
        pad_swiglu_hidden(model)
    converted = convert_to_float8(model, min_features=16)
    odd = {"blocks.0.mlp.w12", "blocks.0.mlp.w3"}
    names = {n for n, m in model.named_modules() if type(m).__name__ == "Float8Linear"}
    assert (odd <= names) is pad
    assert converted == len(names)
