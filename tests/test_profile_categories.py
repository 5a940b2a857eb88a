"""Kernel categories of the profilers (benchmarks/profile_train.py, profile_sampling.py) on kernel names recorded
on the H200 (benchmarks/results/h200-2026-12-0*/profile_sampling*.json)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
profile_sampling = pytest.importorskip("profile_sampling")

NAMES = {
    "nvjet_sm90_tst_192x192_64x4_1x2_h_bz_coopB_bias_TNN": "matmul",
    "void cutlass::Kernel2<cutlass_80_tensorop_bf16_s16816gemm_bf16_256x128_64x3_tn_align2>(cutlass_80_tensorop_bf16_s16816ge": "matmul",  # noqa: E501
    "nvjet_sm90_qqtst_128x128_128x6_1x1_h_bz_coopA_algo2_ovscale_bias_TNT": "fp8 matmul",
    "cudnn_generated_fort_native_sdpa_sm90_flash_fprop_wgmma_f16_knob_7_64x128x128_4x1x1_cga1x1x1_kernel0_0": (
        "attention"
    ),
    # Inductor's rotary/layout kernel before cuDNN attention: named after the attention op it feeds
    "triton_poi_fused__scaled_dot_product_cudnn_attention__to_copy_add_mul_neg_permute_select_stack_view_13": (
        "fused elementwise (Triton)"
    ),
    "triton_red_fused__to_copy_add_mean_mul_pow_rsqrt_split_view_19": "fused elementwise (Triton)",
    # the FP8 path's GELU / norm kernels that also take the per-row maximum for the next FP8 linear
    "triton_red_fused__scaled_mm__to_copy_abs_amax_clamp_div_gelu_t_view_11": (
        "fp8 quantise + fused elementwise (Triton)"
    ),
    "triton_tem_fused_mm_0": "matmul",
    "void at::native::(anonymous namespace)::vectorized_layer_norm_kernel<float, float, false>(int, float, float": (
        "reduction / norm"
    ),
}


@pytest.mark.parametrize("name", list(NAMES))
def test_sampling_category(name: str) -> None:
    assert profile_sampling.sampling_category(name) == NAMES[name]


def test_profiler_ranges_are_not_counted_as_kernels() -> None:
    """torch's profiler reports ``Optimizer.step#AdamW.step`` as a range over the optimizer's kernels; counted as
    a kernel it doubled their time (the H200 training profiles of 2026-12-06 summed to 104% of the step)."""
    import torch

    profile_train = pytest.importorskip("profile_train")
    layer = torch.nn.Linear(8, 8)
    opt = torch.optim.AdamW(layer.parameters())

    def step():
        layer(torch.randn(4, 8)).square().mean().backward()
        opt.step()
        opt.zero_grad()

    profile = profile_train.profile_loop(step, 2, torch.device("cpu"), warmup=1)
    assert profile.kernels_us, "nothing was profiled"
    assert not [k for k in profile.kernels_us if k.startswith(profile_train.USER_RANGES)]
