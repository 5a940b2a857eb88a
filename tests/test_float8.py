"""FP8 sampling (``precision: fp8``): the e4m3 quantisation against an independent numpy rounding, the FP8 linear
against its float32 dequantised reference and against float32 layers, which linears convert, the one-line refusal
on devices without FP8 matmuls, the shard fingerprint and the CLI switches.

``torch._scaled_mm`` runs float8 on the CPU in this torch, so the real kernel call is checked here too; the CUDA
kernel and its compiled form are checked where a GPU of compute capability 8.9 or newer is present."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from mixflow_bench.models.float8 import (
    E4M3_MAX,
    Float8Linear,
    Float8UnsupportedError,
    convert_to_float8,
    dequantized_forward,
    float8_unsupported_reason,
    quantize_rowwise,
    require_float8,
)
from mixflow_bench.models.gmdit import GMDiT
from mixflow_bench.models.sit import SiT, SiTBlock
from mixflow_bench.recipes.schema import GuidanceSection, SampleSection
from mixflow_bench.sampling import Generator, sample_to_npz
from mixflow_bench.sampling.fast import FastPath, prepare_model
from mixflow_bench.sampling.models import resolve_model
from mixflow_bench.sampling.velocity import model_generator, sample_fingerprint

pytestmark = pytest.mark.float_sensitive  # also run with OMP_NUM_THREADS=1 in CI (.ci/run)

FP8_GPU = torch.cuda.is_available() and torch.cuda.get_device_capability() >= (8, 9)
BF16_REL = 2.0**-8  # one bfloat16 rounding of the output (half an ulp is 2^-9 relative), with margin


def _cpu_runs_rowwise_scaled_mm() -> bool:
    """Whether this torch's CPU ``_scaled_mm`` takes row-wise scales (torch 2.14 does; 2.11 only per-tensor)."""
    ones = torch.ones(16, 16).to(torch.float8_e4m3fn)
    try:
        torch._scaled_mm(ones, ones.t(), scale_a=torch.ones(16, 1), scale_b=torch.ones(1, 16), out_dtype=torch.bfloat16)
    except RuntimeError:
        return False
    return True


needs_cpu_scaled_mm = pytest.mark.skipif(
    not _cpu_runs_rowwise_scaled_mm(), reason="this torch's CPU _scaled_mm has no row-wise scales (CUDA test below)"
)


def assert_bf16_output_close(
    y: torch.Tensor, layer: Float8Linear, x: torch.Tensor, accumulation: float = 0.0
) -> None:
    """``y = layer(x)`` equals the float64 dequantised product ``p = (x_q s_a)(W_q s_w)^T`` plus the bias ``b`` up
    to the bfloat16 output roundings (a kernel may round ``p`` before adding ``b`` and round again: at most
    ``2^-9 |p| + 2^-9 |p + b| <= 2^-8 (|p| + |b|)``) and ``accumulation`` times ``|x_q s_a| |W_q s_w|^T`` for the
    accumulator (float32 on the CPU: negligible; Hopper's FP8 tensor cores add in fewer bits between promotions)."""
    x_q, x_s = quantize_rowwise(x.reshape(-1, layer.in_features))
    a = x_q.double() * x_s.double()
    w = layer.weight_fp8.double() * layer.weight_scale.double().reshape(-1, 1)
    p = (a @ w.t()).reshape(*x.shape[:-1], layer.out_features)
    b = torch.zeros((), dtype=torch.float64) if layer.bias is None else layer.bias.double().to(p.device)
    magnitude = (a.abs() @ w.abs().t()).reshape(p.shape)
    bound = BF16_REL * (p.abs() + b.abs()) + accumulation * magnitude + 1e-6 * float(magnitude.max())
    excess = ((y.double() - (p + b)).abs() - bound).max()
    assert excess <= 0, f"{float(excess):.3g} over the bfloat16 output bound"


def e4m3_reference(v: np.ndarray) -> np.ndarray:
    """Round-to-nearest-even onto the e4m3fn grid (3 mantissa bits, subnormal spacing 2^-9), saturating at 448."""
    a = np.abs(v.astype(np.float64))
    exponent = np.floor(np.log2(np.maximum(a, 2.0**-6)))  # below the smallest normal 2^-6: the subnormal spacing
    step = 2.0 ** (exponent - 3)
    return np.sign(v) * np.minimum(np.round(a / step) * step, 448.0)  # np.round: half to even


def rel_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


def randomized(module: nn.Module, std: float, seed: int = 0) -> nn.Module:
    """Every parameter drawn N(0, std^2): the zero-initialised adaLN and output layers would hide the linears."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return module.eval()


# --- quantisation --------------------------------------------------------------------------------------------
def test_rowwise_quantisation_matches_an_independent_e4m3_rounding():
    g = torch.Generator().manual_seed(0)
    t = torch.randn(6, 96, generator=g) * torch.logspace(-8, 8, 6)[:, None]  # rows over 16 decades
    t[3, :40] *= 1e-4  # tiny entries next to large ones: subnormals of the row's scale
    q, scale = quantize_rowwise(t)
    assert q.dtype == torch.float8_e4m3fn and scale.dtype == torch.float32 and scale.shape == (6, 1)
    torch.testing.assert_close(scale, t.abs().amax(dim=1, keepdim=True) / 448, rtol=0, atol=0)
    ratio = (t / scale).numpy()
    np.testing.assert_array_equal(q.float().numpy(), e4m3_reference(ratio))
    # the round trip is within half an e4m3 step: 2^-4 relative, or half the subnormal spacing 2^-10 absolute
    back = q.float() * scale
    assert torch.all((back - t).abs() <= t.abs() / 16 + scale * 2.0**-10)


@needs_cpu_scaled_mm
def test_row_maximum_saturates_at_448_and_zero_rows_stay_zero():
    t = torch.tensor([[3.0, -7.5, 1e-3, 7.5], [-1e30, 2e29, 0.0, 1.0], [0.0] * 4, [-5e-40, 0.0, 0.0, 1e-45]])
    q, scale = quantize_rowwise(t)
    qf = q.float()
    assert not torch.isnan(qf).any()
    assert qf[0].tolist()[1] == -E4M3_MAX and qf[0].tolist()[3] == E4M3_MAX
    assert qf[1, 0] == -E4M3_MAX and qf[1].abs().max() == E4M3_MAX
    assert torch.all(qf[2] == 0) and scale[2, 0] > 0  # the amax floor keeps the scale positive
    assert torch.all(qf[3] == 0)  # below the floor: a row of (sub)normal dust quantises to zero
    # a layer fed a zero row returns exactly its (bfloat16) bias there
    layer = Float8Linear(nn.Linear(32, 16))
    x = torch.randn(3, 32)
    x[1] = 0
    assert torch.equal(layer(x)[1], layer.bias.float())


# --- the FP8 linear ------------------------------------------------------------------------------------------
@needs_cpu_scaled_mm
def test_float8_linear_equals_its_dequantised_reference_and_approximates_float32():
    torch.manual_seed(0)
    linear = nn.Linear(256, 512)
    layer = Float8Linear(linear)
    assert layer.weight_fp8.shape == (512, 256) and layer.weight_fp8.is_contiguous()
    assert layer.weight_scale.shape == (1, 512) and layer.bias.dtype == torch.bfloat16
    x = torch.randn(4, 7, 256)  # a leading shape of two dimensions is flattened and restored
    y, ref = layer(x), dequantized_forward(layer, x)
    assert y.shape == (4, 7, 512) and y.dtype == torch.float32  # outside autocast: the input's dtype
    torch.testing.assert_close(y, ref, rtol=BF16_REL, atol=1e-5 * float(ref.abs().max()))
    assert_bf16_output_close(y, layer, x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y_autocast = layer(x)
    assert y_autocast.dtype == torch.bfloat16 and torch.equal(y_autocast.float(), y)  # autocast leaves it alone
    # e4m3 rounds x and W by up to 2^-4 relative each (about 2.6 % rms): ~3.7 % on y for random data
    assert rel_l2(y, linear(x).detach()) < 5e-2


def test_float8_linear_refuses_sizes_scaled_mm_cannot_take():
    with pytest.raises(ValueError, match="multiples of 16"):
        Float8Linear(nn.Linear(100, 512))


def test_convert_counts_and_skips():
    shared = nn.Linear(512, 512)
    model = nn.ModuleDict(
        {
            "big": nn.Linear(512, 1024),
            "odd": nn.Linear(520, 512),  # 520 = 16 * 32.5: not a multiple of 16
            "small": nn.Linear(128, 512),  # below 256 features
            "no_bias": nn.Linear(256, 256, bias=False),
            "a": nn.Sequential(shared, nn.SiLU()),
            "b": nn.Sequential(nn.SiLU(), shared),
            "t_embedder": nn.Sequential(nn.Linear(256, 512), nn.SiLU(), nn.Linear(512, 512)),
            "mha": nn.MultiheadAttention(256, 4),  # its out_proj is an nn.Linear subclass it reads directly
            "norm": nn.LayerNorm(256),
        }
    )
    assert convert_to_float8(model) == 3  # big, no_bias and the shared one (once)
    assert isinstance(model["big"], Float8Linear) and isinstance(model["no_bias"], Float8Linear)
    assert model["no_bias"].bias is None
    assert model["a"][0] is model["b"][1] and isinstance(model["a"][0], Float8Linear)
    assert all(type(m) is nn.Linear for m in (model["odd"], model["small"], model["t_embedder"][0]))
    assert type(model["mha"].out_proj) is not Float8Linear
    assert not any(p.requires_grad for p in model.parameters())
    assert convert_to_float8(model) == 0  # nothing left to convert
    small = nn.Sequential(nn.Linear(128, 512))
    assert convert_to_float8(small, min_features=16) == 1


def test_sit_layout_converts_the_token_and_adaln_linears_only():
    net = SiT(input_size=8, patch_size=2, in_channels=4, hidden_size=256, depth=2, num_heads=4, num_classes=10)
    kinds = {name: type(m).__name__ for name, m in net.named_modules() if isinstance(m, (nn.Linear, Float8Linear))}
    assert convert_to_float8(net) == 2 * 5 + 1  # per block qkv, proj, fc1, fc2, adaLN; the final adaLN
    after = {name: type(m).__name__ for name, m in net.named_modules() if name in kinds}
    assert after["final_layer.linear"] == "Linear"  # 256 -> 32: too small to gain
    assert after["t_embedder.mlp.0"] == after["t_embedder.mlp.2"] == "Linear"
    assert after["blocks.1.attn.qkv"] == after["blocks.0.adaLN_modulation.1"] == "Float8Linear"


@needs_cpu_scaled_mm
def test_converted_sit_block_and_model_stay_close_to_float32():
    """Bounds: ~3.7 % per quantised linear (rounding of x and W); the block's update (here about half the size of
    its input) chains three quantised products (adaLN gate, qkv, proj / fc1, fc2), ~sqrt(3) times that (measured
    ~7 %); the residual stream keeps the block output (~3.5 %) and a whole SiT-S/8's velocity (~3.7 %) below 5 %.
    bf16 autocast alone is ~0.6 % on each."""
    block = randomized(SiTBlock(256, 4), std=0.05)
    g = torch.Generator().manual_seed(1)
    x, c = torch.randn(2, 64, 256, generator=g), torch.randn(2, 256, generator=g)
    fp8 = copy.deepcopy(block)
    assert convert_to_float8(fp8) == 5
    with torch.no_grad():
        ref = block(x, c)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = fp8(x, c).float()
    assert rel_l2(out - x, ref - x) < 0.1
    assert rel_l2(out, ref) < 5e-2
    spec, net = resolve_model("sit-s-8", random_init=True)
    net = randomized(net, std=0.02)
    xs, t, y = torch.randn(2, *spec.latent_shape, generator=g), torch.rand(2, generator=g), torch.tensor([1, 2])
    fp8_net = copy.deepcopy(net)
    assert convert_to_float8(fp8_net) == 12 * 5 + 2  # patch 8: the output layer is 384 -> 8 * 8 * 8, converted
    with torch.no_grad():
        ref = net(xs, t, y)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = fp8_net(xs, t, y).float()
    assert rel_l2(out, ref) < 5e-2


@needs_cpu_scaled_mm
def test_converted_block_traces_into_one_graph():
    """torch.compile sees the quantisation, the autocast switch and ``_scaled_mm`` without a graph break."""
    block = randomized(SiTBlock(256, 4), std=0.05)
    convert_to_float8(block)
    x, c = torch.randn(2, 16, 256), torch.randn(2, 256)
    compiled = torch.compile(block, backend="aot_eager", fullgraph=True)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(compiled(x, c), block(x, c))


@needs_cpu_scaled_mm
def test_gmflow_model_converts_and_keeps_its_mixture():
    net = randomized(GMDiT(num_gaussians=2, input_size=8, hidden=256, depth=1, heads=4, num_classes=10), std=0.02)
    fp8 = copy.deepcopy(net)
    assert convert_to_float8(fp8) > 0
    assert type(fp8.emb.timestep_embedder.linear_1) is nn.Linear  # the model reads its weight's dtype
    x, t, y = torch.randn(2, 4, 8, 8), torch.rand(2), torch.tensor([1, 2])
    with torch.no_grad():
        ref = net(x, t, y).mean()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = fp8(x, t, y).mean()
    assert torch.isfinite(out).all() and rel_l2(out, ref) < 5e-2


# --- devices and the sampling pipeline -----------------------------------------------------------------------
def test_unsupported_devices_are_refused_in_one_line(monkeypatch):
    with pytest.raises(Float8UnsupportedError, match=r"compute capability 8\.9 or newer.*this run is on cpu"):
        require_float8("cpu")
    assert issubclass(Float8UnsupportedError, ValueError)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA A100-SXM4-80GB")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    reason = float8_unsupported_reason("cuda")
    assert reason is not None and "A100" in reason and "has 8.0" in reason and "\n" not in reason
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    assert float8_unsupported_reason("cuda") is None


@pytest.mark.skipif(FP8_GPU, reason="checks the refusal on a machine without FP8 matmuls")
def test_sampling_with_fp8_is_refused_before_anything_runs():
    spec, net = resolve_model("sit-s-8", random_init=True)
    cfg = SampleSection(sampler="euler", steps=2, precision="fp8")
    with pytest.raises(Float8UnsupportedError, match="precision fp8 needs"):
        model_generator(spec, net, cfg)


@needs_cpu_scaled_mm
def test_fp8_path_samples_a_converted_copy(monkeypatch):
    """With the device check passed (the CPU runs ``_scaled_mm`` too), the fp8 path converts a copy of the model,
    leaves the caller's model float, and samples close to fp32; a model with nothing to convert is refused."""
    import mixflow_bench.sampling.fast as fast

    monkeypatch.setattr(fast, "require_float8", lambda device: None)
    spec, net = resolve_model("sit-s-8", random_init=True)
    net = randomized(net, std=0.02)
    model = prepare_model(net, FastPath(precision="fp8", compile=False))
    assert model is not net and isinstance(model.blocks[0].attn.qkv, Float8Linear)
    assert type(net.blocks[0].attn.qkv) is nn.Linear
    cfg = SampleSection(sampler="euler", steps=3, guidance=GuidanceSection(kind="cfg", scale=1.5, channels=3))
    noise, y = torch.randn(2, *spec.latent_shape), torch.tensor([3, 4])
    ref = model_generator(spec, net, cfg).generate(noise, y, lambda i: None)
    out = model_generator(spec, net, dataclasses.replace(cfg, precision="fp8")).generate(noise, y, lambda i: None)
    assert out.dtype == torch.float32 and rel_l2(out, ref) < 5e-2
    _, toy = resolve_model("toy-mlp", overrides={"hidden": 64, "depth": 1})
    with pytest.raises(Float8UnsupportedError, match="no linear layer FP8 can run"):
        prepare_model(toy, FastPath(precision="fp8", compile=False))


def test_fp8_samples_never_share_shards_with_bf16(tmp_path):
    bf16 = SampleSection(sampler="sde", steps=250, precision="bf16", compile=True)
    fp8 = dataclasses.replace(bf16, precision="fp8")
    assert sample_fingerprint("sit-xl-2", bf16) != sample_fingerprint("sit-xl-2", fp8)
    # model_generator uses this fingerprint
    spec, net = resolve_model("toy-mlp", overrides={"hidden": 16, "depth": 1})
    exact = SampleSection(sampler="euler", steps=2)
    assert model_generator(spec, net, exact).fingerprint == sample_fingerprint("toy-mlp", exact)

    def generator(cfg: SampleSection) -> Generator:
        return Generator(generate=lambda noise, y, step: torch.zeros(len(y), 3, 4, 4), latent_shape=(2,),
                         num_classes=3, fingerprint=sample_fingerprint("sit-xl-2", cfg))  # fmt: skip

    sample_to_npz(generator(bf16), 2, tmp_path / "s.npz", batch_size=2, shard_size=1, progress=False, merge=False)
    with pytest.raises(ValueError, match="other settings"):
        sample_to_npz(generator(fp8), 2, tmp_path / "s.npz", batch_size=2, shard_size=1, progress=False)


# --- CLI -----------------------------------------------------------------------------------------------------
def test_fp8_flag_reaches_the_sample_config(tmp_path, monkeypatch):
    from mixflow_bench.cli import reproduce_cmd
    from mixflow_bench.cli.main import cli
    from mixflow_bench.launch import local

    seen: dict = {}
    monkeypatch.setattr(local.LocalLauncher, "run", lambda self, task: seen.__setitem__("task", task))
    for flags in (["--fp8"], ["--fast", "--fp8"]):
        result = CliRunner().invoke(cli, ["sample", "tiny-digits", *flags, "--out", str(tmp_path / "x.npz")])
        assert result.exit_code == 0, result.output
        sample = seen["task"].args["sample"]
        assert (sample["precision"], sample["compile"], sample["attention"]) == ("fp8", True, "sdpa")
    out = str(tmp_path / "x.npz")
    result = CliRunner().invoke(cli, ["sample", "tiny-digits", "sample.precision=fp8", "--out", out])
    assert result.exit_code == 0, result.output
    assert (seen["task"].args["sample"]["precision"], seen["task"].args["sample"]["compile"]) == ("fp8", False)
    monkeypatch.setattr(reproduce_cmd, "_reproduce_pipeline", lambda recipe, ov, *a, **k: seen.__setitem__("ov", ov))
    result = CliRunner().invoke(cli, ["reproduce", "sit-xl-256-sde-cfg", "--fp8"])
    assert result.exit_code == 0, result.output
    assert seen["ov"]["sample"] == {"precision": "fp8", "attention": "sdpa", "compile": True}
    result = CliRunner().invoke(cli, ["reproduce", "digits", "--fp8"])
    assert result.exit_code != 0 and "--fp8 applies to the sampling stage of full pipelines" in result.output


@pytest.mark.skipif(FP8_GPU, reason="checks the refusal on a machine without FP8 matmuls")
def test_fp8_on_a_cpu_is_one_line_from_the_cli(tmp_path):
    from mixflow_bench.cli.main import cli

    result = CliRunner().invoke(cli, ["sample", "tiny-digits", "--fp8", "--out", str(tmp_path / "x.npz")])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "precision fp8 needs a CUDA GPU" in lines[0], result.output
    assert "Traceback" not in result.output


# --- on an FP8 GPU -------------------------------------------------------------------------------------------
@pytest.mark.skipif(not FP8_GPU, reason="needs a CUDA GPU of compute capability 8.9 or newer")
def test_cuda_kernel_matches_the_reference_eager_and_compiled():
    torch.manual_seed(0)
    layer = Float8Linear(nn.Linear(1152, 4608).cuda())
    x = torch.randn(300, 1152, device="cuda")  # a row count that is no multiple of 16
    assert_bf16_output_close(layer(x), layer, x, accumulation=2.0**-12)
    block = randomized(SiTBlock(256, 4), std=0.05).cuda()
    xb, c = torch.randn(8, 64, 256, device="cuda"), torch.randn(8, 256, device="cuda")
    reference = copy.deepcopy(block)
    convert_to_float8(block)
    with torch.no_grad():
        ref = reference(xb, c).float()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            eager = block(xb, c).float()
            compiled = torch.compile(block)(xb, c).float()
    # compiled code quantises the float32 intermediates eager rounds to bfloat16 first, so some elements land on
    # the neighbouring e4m3 value: both stay as close to float32 as on the CPU, and closer to each other than that
    assert rel_l2(eager, ref) < 5e-2 and rel_l2(compiled, ref) < 5e-2
    assert rel_l2(compiled, eager) < 3e-2
