"""Exact velocity fields against brute force; the procedural shapes' determinism; the packed weight format."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mixflow_bench.analysis.exact_velocity import GaussianMixtureField, ring_velocity
from mixflow_bench.data.shapes import SHAPE_CLASSES, generate_shapes
from mixflow_bench.data.toy import GaussianRing
from mixflow_bench.metrics.packed_weights import pack_tensor, unpack_tensor


def _brute_posterior_velocity(x, m, centers, std, allowed):
    """(E[x1 - x0 | x_m = x], log p_m(x)) by an explicit loop over mixture components (numpy, float64)."""
    d = len(x)
    logs, vels = [], []
    for c, ok in zip(centers, allowed):
        if not ok:
            continue
        var = m * m * std**2 + (1 - m) ** 2
        logs.append(-((x - m * c) ** 2).sum() / (2 * var) - d / 2 * math.log(2 * math.pi * var))
        # x1 | x, k ~ N(c + m std^2 / var (x - m c), ...); x0 = (x - m x1) / (1 - m)
        e_x1 = c + m * std**2 / var * (x - m * c)
        vels.append(e_x1 - (x - m * e_x1) / (1 - m))
    logs = np.array(logs)
    top = logs.max()
    w = np.exp(logs - top)
    return (w[:, None] * np.array(vels)).sum(0) / w.sum(), top + math.log(w.sum() / sum(allowed))


def _brute_mixflow(x, t, gamma, centers, std, allowed, n=2000):
    """The MixFlow optimum by a midpoint rule over m in [(1 - gamma) t, t]."""
    lo = (1 - gamma) * t
    ms = lo + (np.arange(n) + 0.5) / n * (t - lo)
    pairs = [_brute_posterior_velocity(x, m, centers, std, allowed) for m in ms]
    logs = np.array([p[1] for p in pairs])
    w = np.exp(logs - logs.max())
    return (w[:, None] * np.array([p[0] for p in pairs])).sum(0) / w.sum()


@pytest.mark.parametrize("std", [0.0, 0.3])
def test_fm_field_matches_brute_force(std):
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(7, 3, generator=g, dtype=torch.float64)
    labels = torch.tensor([0, 1, 0, 1, 1, 0, 2])
    field = GaussianMixtureField(centers, std, labels)
    x = torch.randn(4, 3, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 0])
    t = torch.tensor([0.1, 0.5, 0.7, 0.93], dtype=torch.float64)
    got = field.fm(x, t, y)
    for i in range(4):
        want, _ = _brute_posterior_velocity(x[i].numpy(), float(t[i]), centers.numpy(), std, (labels == y[i]).numpy())
        np.testing.assert_allclose(got[i].numpy(), want, rtol=1e-9, atol=1e-9)


def test_fm_field_is_the_ring_closed_form():
    ring = GaussianRing()
    field = GaussianMixtureField(ring.centers(), ring.std)
    x = torch.randn(16, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 2
    t = torch.linspace(0.0, 0.95, 16, dtype=torch.float64)
    torch.testing.assert_close(field.fm(x, t), ring_velocity(ring)(x, t), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("std,gamma", [(0.0, 0.8), (0.25, 0.5)])
def test_mixflow_field_matches_brute_force(std, gamma):
    g = torch.Generator().manual_seed(2)
    centers = torch.randn(5, 2, generator=g, dtype=torch.float64)
    field = GaussianMixtureField(centers, std, nodes=48)
    x = torch.randn(3, 2, generator=g, dtype=torch.float64)
    t = torch.tensor([0.3, 0.6, 0.85], dtype=torch.float64)
    got = field.mixflow(x, t, None, gamma)
    allowed = np.ones(5, dtype=bool)
    for i in range(3):
        want = _brute_mixflow(x[i].numpy(), float(t[i]), gamma, centers.numpy(), std, allowed)
        np.testing.assert_allclose(got[i].numpy(), want, rtol=1e-5, atol=1e-6)


def test_class_conditional_mixflow_field_matches_brute_force():
    """Each sample against its own class's centres only, with several classes in one batch (the digits path)."""
    g = torch.Generator().manual_seed(5)
    centers = torch.randn(9, 3, generator=g, dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 1])
    field = GaussianMixtureField(centers, 0.0, labels, nodes=48)
    x = torch.randn(6, 3, generator=g, dtype=torch.float64)
    y = torch.tensor([1, 0, 2, 1, 0, 2])
    t = torch.tensor([0.2, 0.45, 0.6, 0.75, 0.85, 0.5], dtype=torch.float64)
    got = field.mixflow(x, t, y, 0.5)
    for i in range(6):
        want = _brute_mixflow(x[i].numpy(), float(t[i]), 0.5, centers.numpy(), 0.0, (labels == y[i]).numpy())
        np.testing.assert_allclose(got[i].numpy(), want, rtol=1e-5, atol=1e-6)


def test_mixflow_field_minimises_the_mixflow_loss():
    """Monte Carlo: at fixed (t, x-neighbourhood) no constant shift of the optimum lowers the MixFlow loss."""
    field = GaussianMixtureField(torch.tensor([[-1.0], [1.0]], dtype=torch.float64), 0.2)
    g = torch.Generator().manual_seed(3)
    n, t, gamma = 400_000, 0.6, 0.8
    m = t * (1 - gamma * torch.rand(n, generator=g, dtype=torch.float64))
    x1 = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0).double()[:, None]
    x1 = x1 + 0.2 * torch.randn(n, 1, generator=g, dtype=torch.float64)
    x0 = torch.randn(n, 1, generator=g, dtype=torch.float64)
    xm = m[:, None] * x1 + (1 - m[:, None]) * x0
    target = x1 - x0
    v = field.mixflow(xm, torch.full((n,), t, dtype=torch.float64), None, gamma)
    base = ((v - target) ** 2).mean()
    for shift in (-0.05, 0.05):
        assert ((v + shift - target) ** 2).mean() > base
    fm = field.fm(xm, torch.full((n,), t, dtype=torch.float64))
    assert ((fm - target) ** 2).mean() > base  # the FM field is not the MixFlow optimum


def test_shapes_are_deterministic_by_seed():
    a, ya = generate_shapes(40, seed=7, size=32)
    b, yb = generate_shapes(40, seed=7, size=32, chunk=9)  # chunking does not change the set
    c, _ = generate_shapes(40, seed=8, size=32)
    assert a.dtype == torch.uint8 and a.shape == (40, 3, 32, 32)
    assert torch.equal(a, b) and torch.equal(ya, yb)
    assert not torch.equal(a, c)
    assert int(ya.min()) >= 0 and int(ya.max()) < len(SHAPE_CLASSES)
    assert float(a.float().std()) > 10  # not blank


def test_packed_weights_round_trip():
    g = torch.Generator().manual_seed(4)
    w = (
        (torch.rand(1001, generator=g) + 0.5)
        * torch.logspace(-3, 1, 1001)
        * (torch.rand(1001, generator=g) - 0.5).sign()
    )
    hi, nib = pack_tensor(w)
    back = unpack_tensor(hi, nib)
    rel = ((back - w).abs() / w.abs()).max()
    assert rel < 2.0**-14
    assert ((hi.float() - w).abs() / w.abs()).max() > 4 * rel  # better than float16 alone


def test_reproduce_shapes_refuses_without_cuda(monkeypatch):
    from click.testing import CliRunner

    from mixflow_bench.cli.main import cli

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    result = CliRunner().invoke(cli, ["reproduce", "shapes-sit-s"])
    assert result.exit_code != 0
    assert "no CUDA device" in result.output and "toy2d digits" in result.output
    assert "Traceback" not in result.output


def test_ensemble_forward_and_pairing():
    """The vmapped ensemble computes each member's own network; members of one seed see the same draws."""
    from mixflow_bench.models.toy_mlp import ToyVelocityMLP
    from mixflow_bench.toy.ensemble import Ensemble, Member, train_ensemble

    models = []
    for s in range(3):
        torch.manual_seed(s)
        m = ToyVelocityMLP((2,), 1, hidden=16, depth=1)
        torch.nn.init.normal_(m.output[1].weight)
        models.append(m)
    ens = Ensemble(models[0], [m.state_dict() for m in models])
    x, t, y = torch.randn(3, 5, 2), torch.rand(3, 5), torch.zeros(3, 5, dtype=torch.long)
    out = ens(x, t, y)
    for i, m in enumerate(models):
        torch.testing.assert_close(out[i], m(x[i], t[i], y[i]))
    # two identical members with the same seed and objective stay identical; another seed does not
    same = Ensemble(models[0], [models[0].state_dict()] * 3)
    members = [Member(0, "a"), Member(0, "b"), Member(1, "c")]
    data = torch.randn(64, 2)
    res = train_ensemble(
        same,
        members,
        data,
        torch.zeros(64, dtype=torch.long),
        steps=3,
        batch_size=8,
        lr=1e-2,
        ema_decay=0.9,
        grad_clip=1.0,
    )
    w = res.weights["input.weight"]
    assert torch.equal(w[0], w[1]) and not torch.equal(w[0], w[2])


def test_report_sentences_come_from_the_numbers():
    from mixflow_bench.toy.report import study_sentences

    def cell(v):
        return {"fd": {"mean": v, "std": 0.0, "values": [v]}}

    summary = {
        "fm-control": {"4": cell(1.0), "16": cell(0.5)},
        "mixflow-g0.5": {"4": cell(1.5), "16": cell(1.0)},
        "exact MixFlow-optimal g0.5": {"4": cell(1.5), "16": cell(1.1)},
    }
    result = {
        "eval_steps": [4, 16],
        "trained_methods": ["fm-control", "mixflow-g0.5"],
        "gammas": [0.5],
        "summary": summary,
    }
    text = study_sentences(result)[0]
    assert "worse than the uniform-time FM control at every step count (FD ratio 1.50–2.00)" in text
    assert "its FD is 0–9% better than the exact MixFlow optimum's" in text
