"""GMFlow against fixed outputs of the official functions (Lakonik/GMFlow c3697df; ``tests/golden.py``).

No official checkout is needed: ``tests/fixtures/golden/gmflow_*.npz`` and ``gmdit_forward.npz`` hold inputs and
the official outputs of ``GMFlowMixin.gm_2nd_order`` (second-order reweighting: the 0.5 h / h_prev factor, the
damping of the mean difference, the cap of the bias power at the average variance, the bias fused with the
guidance bias), ``GMFlow.forward_test`` with the GM-SDE scheduler (x0 drawn from the GM, then
``c1 x + c2 x0 + sqrt(c3) eps``) at first and second order, and ``_GMDiTTransformer2DModel`` (time embedded as
``1000 t``, the output un-patchified into K mean maps and K logit maps).
"""

from __future__ import annotations

import pytest
import torch
from golden import assert_close, fill_, load

from mixflow_bench.flow.gmflow import (
    GaussianMixture,
    convert_to_time,
    gm_sde,
    gmflow_grid,
    probabilistic_guidance,
    second_order_reweight,
    u_to_x0,
)
from mixflow_bench.models.gmdit import GMDiT

ULPS = 64  # rounding only: the same formulas in another order (float64 fixtures; the GM-SDE loop runs in float32)


def _gm(data: dict, prefix: str) -> GaussianMixture:
    return GaussianMixture(data[f"{prefix}_means"], data[f"{prefix}_logweights"], data[f"{prefix}_logstds"])


def _assert_gm(ours: GaussianMixture, data: dict, prefix: str, rel: float, what: str) -> None:
    for key in ("means", "logweights", "logstds"):
        assert_close(getattr(ours, key), data[f"{prefix}_{key}"], rel, f"{what} {key}")


@pytest.mark.parametrize("case", ["plain", "capped", "guided"])
def test_second_order_reweighting_matches_the_official_gm_2nd_order(case):
    data = load("gmflow_second_order")
    p = f"{case}_"
    t_prev, t_now, t_next = data[p + "times"].tolist()
    scale = float(data[p + "scale"])
    x, x_prev = data[p + "x"], data[p + "x_prev"]
    mean_prev = convert_to_time(_gm(data, p + "prev"), x_prev, t_prev, x, t_now).mean()
    if scale > 0:
        guided = probabilistic_guidance(_gm(data, p + "cond"), _gm(data, p + "uncond"), scale)
        ours = second_order_reweight(guided.gm, mean_prev, t_now - t_next, t_prev - t_now, guided=guided,
                                     guidance_scale=scale)  # fmt: skip
    else:
        ours = second_order_reweight(_gm(data, p + "cond"), mean_prev, t_now - t_next, t_prev - t_now)
    _assert_gm(ours, data, p + "out", ULPS, f"2nd order ({case})")


def test_the_second_order_cases_exercise_damping_and_the_power_cap():
    """The fixture's cases are informative: damping strictly between 0 and 1, the cap binding only where meant."""
    data = load("gmflow_second_order")
    for case, capped in (("plain", False), ("capped", True), ("guided", False)):
        p = f"{case}_"
        t_prev, t_now, _ = data[p + "times"].tolist()
        cond = _gm(data, p + "cond").iso_gaussian()
        avg_var = cond.var.mean(dim=(-3, -2, -1))
        w = float(data[p + "scale"])
        damp = (1 - avg_var * (w * w + 0.005) / (t_prev - t_now) ** 2).clamp(min=0).sqrt()
        assert ((damp > 0.05) & (damp < 0.95)).all(), (case, damp)
        mean_prev = convert_to_time(_gm(data, p + "prev"), data[p + "x_prev"], t_prev, data[p + "x"], t_now).mean()
        power = ((cond.mean - mean_prev) * damp.reshape(-1, 1, 1, 1) * 0.5).square().mean(dim=(-3, -2, -1))
        assert bool((power > avg_var).all()) == capped, (case, power, avg_var)


@pytest.mark.parametrize("order", [1, 2])
def test_gm_sde_trajectory_matches_the_official_sampler(order):
    """The same fixed u-GM "network" and the same draws (component uniforms, Gaussians, step noise) on both sides."""
    data = load("gmflow_sde")
    u_gm = _gm(data, "u")
    nfe = data["uniforms"].shape[0]

    def gm_fn(x, t):
        return GaussianMixture(*(v.to(x.dtype).expand(len(x), *v.shape[1:])
                                 for v in (u_gm.means, u_gm.logweights, u_gm.logstds)))  # fmt: skip

    out = gm_sde(
        gm_fn, data["noise"].float(), gmflow_grid(nfe), order=order,
        sample_x0=lambda gm, i: gm.sample_from(data["uniforms"][i], data["normals"][i].to(gm.means.dtype)),
        noise=lambda i: data["step_noise"][i].float(),
    )  # fmt: skip
    assert_close(out, data[f"out_order{order}"], ULPS, f"GM-SDE order {order}")


def test_gmdit_forward_matches_the_official_transformer():
    data = load("gmdit_forward")
    model = fill_(GMDiT(num_gaussians=2, input_size=4, hidden=16, depth=1, heads=2, num_classes=3).double(), 21)
    with torch.no_grad():
        gm = model.eval()(data["x"], data["t"], data["y"])
    for key in ("means", "logweights", "logstds"):
        assert_close(getattr(gm, key), data[key], ULPS, f"GM-DiT {key}")


def test_u_to_x0_is_used_consistently_with_the_official_time_scale():
    """The u -> x0 map at DATA_AT_0 time t (the official ``u_to_x_0`` at 1000 t): x0 = x - t u."""
    data = load("gmflow_sde")
    x = data["noise"]
    gm = u_to_x0(_gm(data, "u"), x, torch.tensor(0.6, dtype=x.dtype).reshape(1, 1, 1, 1))
    torch.testing.assert_close(gm.means, x.unsqueeze(1) - 0.6 * data["u_means"], rtol=0, atol=1e-15)
