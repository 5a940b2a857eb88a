"""Time-dependent GM maps of GMFlow, on the linear path in ``DATA_AT_0`` time.

Every time ``t`` here is of :attr:`TimeConvention.DATA_AT_0` (t = 0 data, t = 1 noise), which on the linear
path is also the noise level: ``x_t = (1 - t) x0 + t eps``, ``alpha = 1 - t``, ``sigma = t``. The network's
random velocity is ``u = eps - x0 = (x_t - x0) / t`` (``dx/dt`` in this convention). Times are tensors that
broadcast against (B, C, H, W) (shape (B, 1, 1, 1)) or Python floats.

* :func:`u_to_x0`: a GM over ``u`` at ``(x_t, t)`` -> the GM over ``x0`` (``mu -> x_t - t mu``, ``s -> t s``);
* :func:`reverse_transition`: Eq. 9, the GM over ``x_{t_to}`` given ``x_t`` for ``t_to < t``;
* :func:`convert_to_time`: Eq. 10, the denoising GM of ``(x_src, t_src)`` re-expressed at ``(x_tgt, t_tgt)``;
* :func:`forward_transition`: a draw of ``x_t_high`` given ``x_t_low`` (training's second stage).
"""

from __future__ import annotations

import torch
from torch import Tensor

from mixflow_bench.flow.gmflow.mixture import EPS, GaussianMixture

TimeLike = Tensor | float


def _time(t: TimeLike, like: Tensor) -> Tensor:
    """A DATA_AT_0 time as a tensor broadcasting against (B, C, H, W) ``like``."""
    t = torch.as_tensor(t, dtype=like.dtype, device=like.device)
    return t.reshape(-1, 1, 1, 1)


def u_to_x0(gm_u: GaussianMixture, x_t: Tensor, t: TimeLike) -> GaussianMixture:
    """GM over ``u`` at DATA_AT_0 time ``t`` -> GM over ``x0``: means ``x_t - t mu``, log-std ``+ log t``."""
    sigma = _time(t, x_t)
    means = x_t.unsqueeze(1) - sigma.unsqueeze(1) * gm_u.means
    logstds = gm_u.logstds + torch.log(sigma.clamp(min=EPS)).reshape(-1, 1, 1, 1, 1)
    return GaussianMixture(means, gm_u.logweights, logstds)


def x0_to_u(x0: Tensor, x_t: Tensor, t: TimeLike) -> Tensor:
    """``u = (x_t - x0) / t`` at DATA_AT_0 time ``t``."""
    return (x_t - x0) / _time(t, x_t).clamp(min=EPS)


def transition_coefficients(t: Tensor, t_to: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(c1, c2, c3)`` of Eq. 9 for DATA_AT_0 times ``t_to < t``.

    ``x_{t_to} | x_t, x0 ~ N(c1 x_t + c2 x0, c3 I)`` with ``beta = sigma_t^2 - (alpha_t / alpha_to)^2
    sigma_to^2``: ``c1 = sigma_to^2 alpha_t / (sigma_t^2 alpha_to)``, ``c2 = beta alpha_to / sigma_t^2``,
    ``c3 = beta sigma_to^2 / sigma_t^2``.
    """
    alpha, alpha_to = 1.0 - t, 1.0 - t_to
    ratio_sigma = t_to / t.clamp(min=EPS)
    ratio_alpha = alpha / alpha_to.clamp(min=EPS)
    beta_over_sigma2 = 1.0 - (ratio_sigma * ratio_alpha) ** 2
    return ratio_sigma**2 * ratio_alpha, beta_over_sigma2 * alpha_to, beta_over_sigma2 * t_to**2


def reverse_transition(gm_x0: GaussianMixture, x_t: Tensor, t: TimeLike, t_to: TimeLike) -> GaussianMixture:
    """Eq. 9: ``q(x_{t_to} | x_t) = sum_k A_k N(c1 x_t + c2 mu_k, (c3 + c2^2 s^2) I)`` (DATA_AT_0 times)."""
    t, t_to = _time(t, x_t), _time(t_to, x_t)
    c1, c2, c3 = transition_coefficients(t, t_to)
    means = c1.unsqueeze(1) * x_t.unsqueeze(1) + c2.unsqueeze(1) * gm_x0.means
    c2_5, c3_5 = c2.reshape(-1, 1, 1, 1, 1), c3.reshape(-1, 1, 1, 1, 1)
    logstds = 0.5 * torch.logaddexp(
        2.0 * (gm_x0.logstds + torch.log(c2_5.clamp(min=EPS))), torch.log(c3_5.clamp(min=EPS))
    )
    return GaussianMixture(means, gm_x0.logweights, logstds)


def reverse_step(x0: Tensor, x_t: Tensor, t: TimeLike, t_to: TimeLike, noise: Tensor) -> Tensor:
    """One GM-SDE step from a drawn ``x0``: ``c1 x_t + c2 x0 + sqrt(c3) noise`` (DATA_AT_0 times)."""
    t, t_to = _time(t, x_t), _time(t_to, x_t)
    c1, c2, c3 = transition_coefficients(t, t_to)
    return c1 * x_t + c2 * x0 + c3.sqrt() * noise


def forward_transition(x_low: Tensor, t_low: TimeLike, t_high: TimeLike, noise: Tensor) -> Tensor:
    """A draw of ``x_{t_high}`` given ``x_{t_low}`` (DATA_AT_0 times, ``t_low <= t_high``)."""
    t_low, t_high = _time(t_low, x_low), _time(t_high, x_low)
    scale = (1.0 - t_high) / (1.0 - t_low)
    return scale * x_low + (t_high**2 - (scale * t_low) ** 2).clamp(min=0).sqrt() * noise


def convert_to_time(
    gm_x0: GaussianMixture, x_src: Tensor, t_src: TimeLike, x_tgt: Tensor, t_tgt: TimeLike
) -> GaussianMixture:
    """Eq. 10: ``q(x0 | x_tgt) ∝ [p(x_tgt | x0) / p(x_src | x0)] q(x0 | x_src)`` for DATA_AT_0 ``t_tgt < t_src``.

    The likelihood ratio is the Gaussian ``N(x0; g_mean, g_var)`` with ``d = (alpha_tgt sigma_src)^2 -
    (alpha_src sigma_tgt)^2``, ``g_mean = (alpha_tgt sigma_src^2 x_tgt - alpha_src sigma_tgt^2 x_src) / d`` and
    ``g_var = (sigma_tgt sigma_src)^2 / d``; its product with the GM is again a GM.
    """
    s_src, s_tgt = _time(t_src, x_src), _time(t_tgt, x_src)
    a_src, a_tgt = 1.0 - s_src, 1.0 - s_tgt
    p, q = a_tgt * s_src, a_src * s_tgt
    denom = (p.square() - q.square()).clamp(min=EPS)
    g_mean = ((p * s_src * x_tgt - q * s_tgt * x_src) / denom).unsqueeze(1)
    g_var = ((s_tgt * s_src).square() / denom).reshape(-1, 1, 1, 1, 1)
    s2 = gm_x0.variance
    norm = (g_var + s2).clamp(min=EPS)
    means = (g_var * gm_x0.means + s2 * g_mean) / norm
    delta = (gm_x0.means - g_mean).square().sum(dim=2, keepdim=True) * (-0.5 / norm)
    logweights = (gm_x0.logweights + delta).log_softmax(dim=1)
    logstds = 0.5 * (torch.log(g_var.clamp(min=EPS)) + torch.log(s2.clamp(min=EPS)) - torch.log(norm))
    return GaussianMixture(means, logweights, logstds)
