"""Probabilistic guidance (GMFlow Eq. 7-8) and the second-order GM reweighting (GMFlow §3.3), on x0-space GMs.

Both reweight a GM ``q`` with a Gaussian mask ``rho(x) = N(x; m + b, v') / N(x; m, v)``, where ``N(m, v)`` is
the isotropic surrogate of the base GM (variance averaged over pixels), ``b`` a bias and ``v'`` a shrunk
variance; the product of a GM with a Gaussian is again a GM, so the fine structure of ``q`` is kept.

* guidance: ``b = w * sqrt(v / mean(d^2)) * d`` with ``d`` the conditional-minus-unconditional mean (optionally
  with its projection on the conditional mean removed), and ``v' = (1 - w^2) v``. The scale ``w`` lies in
  [0, 1); at ``w -> 1`` the mask collapses.
* second order: ``b`` is the damped Adams-Bashforth mean difference ``k (mu_now - mu_prev->now)`` times
  ``sqrt(max(0, 1 - (w^2 + c_a) v / h_prev^2))``, fused with the guidance bias, and capped at power ``v``.

Means and variances are per sample; "mean over the sample" is over (C, H, W).
"""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor

from mixflow_bench.flow.gmflow.mixture import EPS, GaussianMixture, IsoGaussian, average_variance, gaussian_ratio

GM2_DAMPING = 0.005  # c_a of the paper and the official gm2_coefs[0]


def _sample_mean(x: Tensor) -> Tensor:
    return x.mean(dim=(-3, -2, -1), keepdim=True)


def check_guidance_scale(scale: float) -> float:
    """The probabilistic guidance scale must lie in [0, 1) (raises ValueError with one clear line)."""
    if not 0.0 <= float(scale) < 1.0:
        raise ValueError(f"probabilistic guidance scale must lie in [0, 1), got {scale}")
    return float(scale)


class GuidedGM(NamedTuple):
    """The guided GM and what the second-order step fuses with it."""

    gm: GaussianMixture
    target: IsoGaussian  # the guided surrogate N(m + b, (1 - w^2) v)
    bias: Tensor  # b, (B, C, H, W)
    avg_var: Tensor  # v averaged over the sample, (B, 1, 1, 1)
    base: IsoGaussian  # surrogate of the conditional GM (variance averaged over pixels)
    base_gm: GaussianMixture  # the conditional GM


def guidance_bias(
    cond_mean: Tensor, var: Tensor, uncond_mean: Tensor, scale: float, orthogonal: float = 1.0
) -> tuple[IsoGaussian, Tensor, Tensor]:
    """(target Gaussian, bias, average variance) of probabilistic guidance at scale ``w`` (see module doc)."""
    bias = cond_mean - uncond_mean
    if orthogonal > 0.0:
        axis = cond_mean
        coef = _sample_mean(bias * axis) / _sample_mean(axis * axis).clamp(min=EPS)
        bias = bias - orthogonal * coef * axis
    power = _sample_mean(bias * bias)
    avg_var = _sample_mean(var)
    bias = bias * ((avg_var / power.clamp(min=EPS)).sqrt() * scale)
    return IsoGaussian(cond_mean + bias, var * (1.0 - scale * scale)), bias, avg_var


def probabilistic_guidance(
    gm_cond: GaussianMixture, gm_uncond: GaussianMixture, scale: float, *, orthogonal: float = 1.0
) -> GuidedGM:
    """Reweight the conditional x0-GM towards ``w`` surrogate standard deviations away from the unconditional."""
    scale = check_guidance_scale(scale)
    base = average_variance(gm_cond.iso_gaussian())
    target, bias, avg_var = guidance_bias(base.mean, base.var, gm_uncond.mean(), scale, orthogonal)
    gm = gm_cond.mul_iso_gaussian(gaussian_ratio(target, base))
    return GuidedGM(gm, target, bias, avg_var, base, gm_cond)


def second_order_reweight(
    gm: GaussianMixture,
    mean_from_prev: Tensor,
    h: float,
    h_prev: float,
    *,
    guided: GuidedGM | None = None,
    guidance_scale: float = 0.0,
    damping: float = GM2_DAMPING,
    guidance_damping: float = 1.0,
) -> GaussianMixture:
    """Second-order GM: shift ``gm`` (x0-space, already guided if ``guided``) by the damped mean difference.

    ``mean_from_prev`` is the previous step's GM converted to the current ``(x_t, t)`` (Eq. 10) and reduced to
    its mean; ``h`` and ``h_prev`` are the current and previous step sizes in DATA_AT_0 time. Without guidance
    the base is ``gm`` itself; with guidance the base is the conditional GM and the guidance bias is added.
    """
    if guided is not None:
        mean_now, base, base_gm, avg_var = gm.mean(), guided.base, guided.base_gm, guided.avg_var
    else:
        surrogate = gm.iso_gaussian()
        mean_now, base, base_gm = surrogate.mean, average_variance(surrogate), gm
        avg_var = _sample_mean(base.var)
    k = 0.5 * h / h_prev
    w = guidance_scale * guidance_damping
    err_power = avg_var * (w * w + damping)
    damp = (1.0 - err_power / (h_prev * h_prev)).clamp(min=0).sqrt()
    bias = (mean_now - mean_from_prev) * (damp * k)
    if guided is not None:
        bias = bias + guided.bias
    power = _sample_mean(bias.square())
    bias = bias * (avg_var / power.clamp(min=EPS)).clamp(max=1).sqrt()
    target = IsoGaussian(base.mean + bias, base.var * (1.0 - power / avg_var.clamp(min=EPS)).clamp(min=EPS))
    return base_gm.mul_iso_gaussian(gaussian_ratio(target, base))


def guided_velocity_gm_cfg(gm_cond: GaussianMixture, gm_uncond: GaussianMixture, scale: float) -> GaussianMixture:
    """Vanilla CFG applied to a GM (the paper's ablation A3): every mean moves by ``(w - 1)(mu_c - mu_u)``."""
    shift = (scale - 1.0) * (gm_cond.mean() - gm_uncond.mean())
    return GaussianMixture(gm_cond.means + shift.unsqueeze(1), gm_cond.logweights, gm_cond.logstds)


__all__ = [
    "GM2_DAMPING",
    "GuidedGM",
    "check_guidance_scale",
    "guidance_bias",
    "guided_velocity_gm_cfg",
    "probabilistic_guidance",
    "second_order_reweight",
]
