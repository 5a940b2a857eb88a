"""Training objectives: plain flow matching, and MixFlow's slowed interpolation mixture beside it.

Times are drawn in data-ward time ``tau`` (tau = 1 is data, the MixFlow paper's convention) and handed to the
model in its own convention.

Flow matching::

    tau ~ p(tau);  x = alpha(tau) x1 + sigma(tau) x0;  loss = |u(x, tau) - u*(x, tau)|^2

MixFlow (the only change: the input comes from a *slowed* time m <= tau; the network still sees tau)::

    tau ~ Beta(2, 1);  m ~ U[(1 - gamma) tau, tau];  x = alpha(m) x1 + sigma(m) x0;
    loss = |u(x, tau) - u*(x, m)|^2

In noise-ward time (RAE: sigma = 1 - tau) the same draw reads ``sigma = 1 - sqrt(U)``, then RAE's shift, then
``sigma_in = sigma + U' gamma (1 - sigma)``, which is identical: ``1 - sigma_in = (1 - sigma)(1 - gamma U')``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from mixflow_bench.flow.conventions import shift_noise_level
from mixflow_bench.flow.paths import Path

TimeDistribution = Literal["uniform", "beta21", "logit-normal"]
Mixture = Literal["slowed", "uniform", "zero-to-t"]


def data_ward_time(u: Tensor, dist: TimeDistribution, normal: Tensor | None = None) -> Tensor:
    """Data-ward training time ``tau`` (1 = data) from uniforms ``u`` (and standard normals for logit-normal).

    ``beta21``: density 2*tau, via ``tau = sqrt(u)``. ``logit-normal``: RAE's ``sigmoid(N(0,1))`` noise level,
    truncated to [0, 0.999] of noise as RAE does, returned as ``tau = 1 - noise level``.
    """
    if dist == "uniform":
        return u
    if dist == "beta21":
        return torch.sqrt(u)
    if dist == "logit-normal":
        if normal is None:
            raise ValueError("logit-normal times need standard normal draws")
        return 1.0 - torch.sigmoid(normal).clamp(max=0.999)
    raise ValueError(f"unknown time distribution {dist!r}")


def shift_data_ward(tau: Tensor, shift: float | None) -> Tensor:
    """Apply RAE's noise-level shift ``s*t/(1+(s-1)t)`` to a data-ward time (shift None or 1: identity)."""
    if shift is None or shift == 1.0:
        return tau
    return 1.0 - shift_noise_level(1.0 - tau, shift)


def slowed_time(tau: Tensor, u: Tensor, mixture: Mixture, gamma: float) -> Tensor:
    """MixFlow's slowed data-ward time ``m`` for training time ``tau`` and uniforms ``u``.

    ``slowed``: m ~ U[(1 - gamma) tau, tau]; ``zero-to-t``: m ~ U[0, tau] (gamma = 1); ``uniform``: m ~ U[0, 1]
    (the paper's ablations).
    """
    if mixture == "slowed":
        return tau * (1.0 - gamma * u)
    if mixture == "zero-to-t":
        return tau * (1.0 - u)
    if mixture == "uniform":
        return u
    raise ValueError(f"unknown mixture {mixture!r}")


@dataclass
class FlowMatching:
    """Flow matching, with MixFlow's slowed interpolation when ``mixture`` is set.

    ``path`` fixes the model's time convention. ``time_shift`` is RAE's noise-level shift (None: no shift).
    ``label_dropout`` replaces labels by ``null_label`` with that probability (classifier-free guidance).
    ``target``: ``"slowed"`` regresses u*(x_m, m) as the paper; ``"original"`` u*(x_t, t) as the optional line of
    the official RAE patch (the same on the linear path).
    """

    path: Path
    t_dist: TimeDistribution = "uniform"
    mixture: Mixture | None = None
    gamma: float = 0.8
    target: Literal["slowed", "original"] = "slowed"
    time_shift: float | None = None
    label_dropout: float = 0.0
    null_label: int = 1000

    def draw(self, batch_size: int, sample_shape: tuple[int, ...], generator: torch.Generator) -> dict[str, Tensor]:
        """Every random number of one step for ``batch_size`` samples (first dim = batch; on the generator's device)."""
        return {
            "noise": torch.randn((batch_size, *sample_shape), generator=generator, device=generator.device),
            "u_time": torch.rand(batch_size, generator=generator, dtype=torch.float64, device=generator.device),
            "n_time": torch.randn(batch_size, generator=generator, dtype=torch.float64, device=generator.device),
            "u_mix": torch.rand(batch_size, generator=generator, dtype=torch.float64, device=generator.device),
            "u_drop": torch.rand(batch_size, generator=generator, device=generator.device),
        }

    def times(self, randomness: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Data-ward (training time tau, input time m); ``m == tau`` for plain flow matching."""
        tau = data_ward_time(randomness["u_time"], self.t_dist, randomness["n_time"])
        tau = shift_data_ward(tau, self.time_shift)
        if self.mixture is None:
            return tau, tau
        return tau, slowed_time(tau, randomness["u_mix"], self.mixture, self.gamma)

    def inputs(
        self, x1: Tensor, y: Tensor, randomness: dict[str, Tensor]
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(network input x, conditioning time in the model's convention, labels, regression target)."""
        conv = self.path.convention
        noise = randomness["noise"].to(device=x1.device, dtype=x1.dtype)
        tau, m = (s.to(device=x1.device, dtype=x1.dtype) for s in self.times(randomness))
        t_cond, t_in = conv.from_data_ward(tau), conv.from_data_ward(m)
        x_in = self.path.interpolate(x1, noise, t_in)
        t_target = t_in if self.target == "slowed" else t_cond
        target = self.path.velocity(x1, noise, t_target)
        if self.label_dropout > 0:
            drop = randomness["u_drop"].to(y.device) < self.label_dropout
            y = torch.where(drop, torch.full_like(y, self.null_label), y)
        return x_in, t_cond, y, target

    def loss(self, model: nn.Module, x1: Tensor, y: Tensor, randomness: dict[str, Tensor]) -> Tensor:
        """Per-sample squared error (B,), averaged over the sample's elements."""
        x_in, t_cond, y, target = self.inputs(x1, y, randomness)
        pred = model(x_in, t_cond, y)
        return (pred.float() - target.float()).pow(2).flatten(1).mean(1)


def mixflow(path: Path, gamma: float = 0.8, **kwargs) -> FlowMatching:
    """MixFlow post-training objective: Beta(2,1) times and the slowed interpolation mixture."""
    kwargs.setdefault("t_dist", "beta21")
    kwargs.setdefault("mixture", "slowed")
    return FlowMatching(path=path, gamma=gamma, **kwargs)
