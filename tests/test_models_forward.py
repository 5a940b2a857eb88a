"""Forward behaviour of the zoo's architectures on small configurations, against closed forms."""

from __future__ import annotations

import math

import pytest
import torch
from tolerance import assert_close_to_scale

from mixflow_bench.flow.conventions import TimeConvention
from mixflow_bench.models.layers import TimestepEmbedder, sincos_2d
from mixflow_bench.models.rae_dit import AxialRope2D, DiTDH, GaussianFourierEmbedding
from mixflow_bench.models.repa import repa_sit
from mixflow_bench.models.sit import SiT, sit

pytestmark = pytest.mark.float_sensitive  # also run with OMP_NUM_THREADS=1 in CI (.ci/run)

torch.set_num_threads(1)


def randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Replace the zero/identity initialisation by random weights so that every path matters."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                fan_in = p[0].numel() if p.ndim >= 2 else 1
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(max(fan_in, 1)))
    return model.eval()


def tiny_sit(**kw) -> SiT:
    args = dict(input_size=8, patch_size=2, in_channels=4, hidden_size=32, depth=2, num_heads=2)
    args.update(kw)
    return randomize(SiT(**args))


def tiny_dith() -> DiTDH:
    return randomize(DiTDH(input_size=4, in_channels=8, hidden_size=(32, 48), depth=(2, 1), num_heads=(2, 2)))


def batch(channels: int, size: int, b: int = 2, seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    return (
        torch.randn(b, channels, size, size, generator=gen),
        torch.rand(b, generator=gen),
        torch.tensor([3, 1000])[:b],
    )


def test_sincos_table_closed_form() -> None:
    dim, grid = 8, 3
    table = sincos_2d(dim, grid)
    q = dim // 4
    for i in range(grid):
        for j in range(grid):
            row = table[i * grid + j]
            for k in range(q):
                w = 10000 ** (-k / q)
                # first half: column index, second half: row index; each half is [sin..., cos...]
                assert row[k].item() == pytest.approx(math.sin(j * w), abs=1e-6)
                assert row[q + k].item() == pytest.approx(math.cos(j * w), abs=1e-6)
                assert row[2 * q + k].item() == pytest.approx(math.sin(i * w), abs=1e-6)
                assert row[3 * q + k].item() == pytest.approx(math.cos(i * w), abs=1e-6)


def test_timestep_frequencies_closed_form() -> None:
    emb = TimestepEmbedder(hidden_size=4, frequency_size=6)
    t = torch.tensor([0.0, 0.37, 1.0])
    feats = emb.frequencies(t)
    for b, tv in enumerate(t.tolist()):
        for k in range(3):
            rate = math.exp(-math.log(10000) * k / 3)
            assert feats[b, k].item() == pytest.approx(math.cos(tv * rate), abs=1e-6)
            assert feats[b, 3 + k].item() == pytest.approx(math.sin(tv * rate), abs=1e-6)


def test_gaussian_fourier_features_closed_form() -> None:
    emb = GaussianFourierEmbedding(hidden_size=4, embedding_size=5)
    t = torch.tensor([0.1, 0.9])
    feats = emb.features(t)
    w = emb.W.tolist()
    for b, tv in enumerate(t.tolist()):
        for k in range(5):
            assert feats[b, k].item() == pytest.approx(math.sin(2 * math.pi * tv * w[k]), abs=1e-5)
            assert feats[b, 5 + k].item() == pytest.approx(math.cos(2 * math.pi * tv * w[k]), abs=1e-5)
    assert emb.W.requires_grad is False and "W" in dict(emb.named_parameters())


def test_rope_equals_explicit_pair_rotations() -> None:
    head_dim, grid = 8, 3
    rope = AxialRope2D(head_dim, grid)
    x = torch.randn(1, 1, grid * grid, head_dim, dtype=torch.float32)
    out = rope(x)
    half = head_dim // 2
    for i in range(grid):
        for j in range(grid):
            n = i * grid + j
            for m in range(head_dim // 2):  # pair (2m, 2m+1)
                axis_pos = i if 2 * m < half else j
                k = m % (half // 2)
                angle = axis_pos * 10000 ** (-2 * k / half)
                a, b = x[0, 0, n, 2 * m].item(), x[0, 0, n, 2 * m + 1].item()
                assert out[0, 0, n, 2 * m].item() == pytest.approx(
                    a * math.cos(angle) - b * math.sin(angle), abs=1e-5
                )
                assert out[0, 0, n, 2 * m + 1].item() == pytest.approx(
                    b * math.cos(angle) + a * math.sin(angle), abs=1e-5
                )


def test_rope_scores_depend_only_on_relative_position() -> None:
    rope = AxialRope2D(16, 4)
    q = torch.randn(16).expand(1, 1, 16, 16)
    k = torch.randn(16).expand(1, 1, 16, 16)
    rq, rk = rope(q)[0, 0], rope(k)[0, 0]
    # tokens (0,0)->(1,2) and (2,1)->(3,3) have the same offset (1, 2)
    s1 = rq[0 * 4 + 0] @ rk[1 * 4 + 2]
    s2 = rq[2 * 4 + 1] @ rk[3 * 4 + 3]
    assert s1.item() == pytest.approx(s2.item(), rel=1e-4, abs=1e-4)


def test_sit_learn_sigma_returns_first_channels() -> None:
    full = tiny_sit(learn_sigma=True)
    half = SiT(
        input_size=8, patch_size=2, in_channels=4, hidden_size=32, depth=2, num_heads=2, learn_sigma=False
    )
    state = full.state_dict()
    # final linear rows are ordered (p, q, channel); keep the rows of channels 0..3 of 8
    rows = [r for r in range(2 * 2 * 8) if r % 8 < 4]
    state["final_layer.linear.weight"] = state["final_layer.linear.weight"][rows]
    state["final_layer.linear.bias"] = state["final_layer.linear.bias"][rows]
    half.load_state_dict(state, strict=True)
    x, t, y = batch(4, 8)
    with torch.no_grad():
        out = full(x, t, y)
        assert out.shape == (2, 4, 8, 8)
        assert_close_to_scale(out, half.eval()(x, t, y), ulps=16)  # float32 rounding: a narrower final matmul


def test_unpatchify_places_patch_pixels() -> None:
    model = tiny_sit(patch_size=4, learn_sigma=False)
    with torch.no_grad():
        model.final_layer.linear.weight.zero_()
        model.final_layer.linear.bias.copy_(torch.arange(4 * 4 * 4, dtype=torch.float32))
    x, t, y = batch(4, 8)
    with torch.no_grad():
        out = model(x, t, y)
    for c in range(4):
        for row in range(8):
            for col in range(8):
                p, q = row % 4, col % 4
                assert out[1, c, row, col].item() == (p * 4 + q) * 4 + c


def test_sdpa_and_math_attention_agree() -> None:
    x, t, y = batch(4, 8)
    model = tiny_sit()
    with torch.no_grad():
        a = model(x, t, y)
        model.set_attention("math")
        b = model(x, t, y)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    dith = tiny_dith()
    xd, td, yd = batch(8, 4)
    with torch.no_grad():
        a = dith(xd, td, yd)
        dith.set_attention("math")
        b = dith(xd, td, yd)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="attention"):
        model.set_attention("flash")


def test_labels_are_never_dropped_in_training_mode() -> None:
    model = tiny_sit()
    x, t, y = batch(4, 8)
    with torch.no_grad():
        ref = model.eval()(x, t, y)
        model.train()
        outs = [model(x, t, y) for _ in range(3)]
    for out in outs:
        torch.testing.assert_close(out, ref, rtol=0, atol=0)


def test_label_and_time_validation() -> None:
    model = tiny_sit()
    x, t, _ = batch(4, 8)
    with pytest.raises(ValueError, match="null label"):
        model(x, t, torch.tensor([0, 1001]))
    with pytest.raises(ValueError, match="t must be"):
        model(x, t[:1], torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="expected input"):
        model(torch.randn(2, 4, 16, 16), t, torch.tensor([0, 1]))


def test_conventions_and_class_attributes() -> None:
    assert SiT.convention is TimeConvention.DATA_AT_1 and SiT.num_classes == 1000
    with torch.device("meta"):
        repa = repa_sit()
    assert repa.convention is TimeConvention.DATA_AT_0 and repa.num_classes == 1000
    assert DiTDH.convention is TimeConvention.DATA_AT_0 and DiTDH.num_classes == 1000


def test_repa_forward_is_velocity_and_projector_is_separate() -> None:
    model = randomize(
        repa_sit("S", 2, input_size=8, depth=3, encoder_depth=2, z_dims=(16,), projector_dim=24)
    )
    x, t, y = batch(4, 8)
    with torch.no_grad():
        v = model(x, t, y)
        v2, feats = model.forward_with_features(x, t, y)
        feats_only = model.projector_features(x, t, y)
    assert v.shape == x.shape and feats[0].shape == (2, 16, 16)
    torch.testing.assert_close(v, v2, rtol=0, atol=0)
    torch.testing.assert_close(feats[0], feats_only[0], rtol=0, atol=0)


def test_small_sit_and_tiny_dith_shapes() -> None:
    model = randomize(sit("S", 8))
    x, t, y = batch(4, 32)
    with torch.no_grad():
        assert model(x, t, y).shape == (2, 4, 32, 32)
        xd, td, yd = batch(8, 4)
        assert tiny_dith()(xd, td, yd).shape == (2, 8, 4, 4)


@pytest.mark.slow
def test_rae_dith_s_real_size_forward_batch1() -> None:
    model = DiTDH(input_size=16, hidden_size=(384, 2048), depth=(12, 2), num_heads=(6, 16)).eval()
    x, t, y = batch(768, 16, b=1)
    with torch.no_grad():
        out = model(x, t, y)
    # official initialisation zeroes the output layer: the untrained velocity is exactly zero
    assert out.shape == (1, 768, 16, 16) and out.abs().max().item() == 0.0
