"""GMFlow's training losses: the GM negative log-likelihood and the transition loss with ratio lambda.

Times are :attr:`TimeConvention.DATA_AT_0` (t = 0 data, t = 1 noise), linear path, as GMFlow. The model is
``model(x_t, t, y) -> GaussianMixture`` over ``u = eps - x0``.

* GM NLL (Eq. 5-6): ``-log sum_k A_k N(u; mu_k, s^2 I)``, up to the constant ``D/2 log 2 pi``; with K = 1 and
  ``s = 1`` it is ``|u - mu|^2 / 2``, the L2 flow-matching loss.
* Transition loss: draw ``t_high``, ``t_low = (1 - lambda) t_high``, ``x_low ~ p(x_{t_low} | x0)``,
  ``x_high ~ p(x_{t_high} | x_low)``; the loss is the NLL of ``x_low`` under the Eq. 9 transition GM built from
  the prediction at ``(x_high, t_high)``. ``lambda = 1`` gives ``t_low = 0``, ``x_low = x0``: the plain GM NLL of
  ``x0`` (that is, of ``u`` up to the constant ``D log t``).

The spectral loss of the paper (only used for GM-SDE sampling of images) is not implemented.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from mixflow_bench.flow.gmflow.mixture import GaussianMixture
from mixflow_bench.flow.gmflow.transitions import forward_transition, reverse_transition, u_to_x0


def gm_nll(gm: GaussianMixture, target: Tensor, eps: float = 1e-4) -> Tensor:
    """Per-pixel GM NLL without the ``2 pi`` constant, (B, H, W); ``1/s`` is clamped at ``1/eps`` as officially."""
    inv_std = torch.exp(-gm.logstds).clamp(max=1.0 / eps)
    z = (target.unsqueeze(1) - gm.means) * inv_std
    per_component = (-0.5 * z.square() - gm.logstds).sum(dim=2)  # (B, K, H, W)
    return -torch.logsumexp(per_component + gm.logweights.squeeze(2), dim=1)


@dataclass
class GMFlowObjective:
    """The transition loss of GMFlow (``trans_ratio`` = lambda; 1.0 is the plain GM NLL).

    ``t_dist``: ``uniform`` (the toy) or ``logit-normal`` (ImageNet) draws of ``t_high``, clamped to
    ``[t_eps, 1]``. The per-sample loss is the per-pixel NLL (summed over the C channels of a pixel) averaged over
    the H x W pixels, the scale of the official ``GMFlowNLLLoss`` (its ``flatmean`` reduction of a (B, H, W)
    loss); ``weight`` is the official ``weight_scale`` (2.0 in the ImageNet config, 1.0 in the checkerboard one).
    """

    trans_ratio: float = 0.9
    t_dist: Literal["uniform", "logit-normal"] = "uniform"
    t_eps: float = 1e-4
    weight: float = 1.0
    label_dropout: float = 0.0
    null_label: int = 1000

    def __post_init__(self) -> None:
        if not 0.0 < self.trans_ratio <= 1.0:
            raise ValueError(f"trans_ratio must lie in (0, 1], got {self.trans_ratio}")

    def draw(self, batch_size: int, sample_shape: tuple[int, ...], generator: torch.Generator) -> dict[str, Tensor]:
        """Every random number of one step (first dim = batch, on the generator's device)."""
        return {
            "noise_low": torch.randn((batch_size, *sample_shape), generator=generator, device=generator.device),
            "noise_high": torch.randn((batch_size, *sample_shape), generator=generator, device=generator.device),
            "u_time": torch.rand(batch_size, generator=generator, dtype=torch.float64, device=generator.device),
            "n_time": torch.randn(batch_size, generator=generator, dtype=torch.float64, device=generator.device),
            "u_drop": torch.rand(batch_size, generator=generator, device=generator.device),
        }

    def times(self, randomness: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """DATA_AT_0 ``(t_low, t_high)``."""
        if self.t_dist == "uniform":
            t_high = randomness["u_time"]
        else:
            t_high = torch.sigmoid(randomness["n_time"])
        t_high = t_high.clamp(min=self.t_eps, max=1.0)
        t_low = torch.minimum(t_high * (1.0 - self.trans_ratio), t_high - self.t_eps).clamp(min=0.0)
        return t_low, t_high

    def inputs(self, x0: Tensor, randomness: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(x_low, x_high, t_low, t_high)`` with x of shape (B, C, H, W) and (B, 1, 1, 1) times."""
        t_low, t_high = (s.to(device=x0.device, dtype=x0.dtype).reshape(-1, 1, 1, 1) for s in self.times(randomness))
        n_low = randomness["noise_low"].to(x0).reshape(x0.shape)
        n_high = randomness["noise_high"].to(x0).reshape(x0.shape)
        x_low = (1.0 - t_low) * x0 + t_low * n_low
        return x_low, forward_transition(x_low, t_low, t_high, n_high), t_low, t_high

    def loss(self, model: nn.Module, x1: Tensor, y: Tensor, randomness: dict[str, Tensor]) -> Tensor:
        """Per-sample transition loss (B,) for data ``x1`` (the data sample; named as the engine calls it)."""
        shape = x1.shape
        x0 = x1.reshape(shape[0], shape[1], 1, 1) if x1.ndim == 2 else x1
        x_low, x_high, t_low, t_high = self.inputs(x0.float(), randomness)
        if self.label_dropout > 0:
            drop = randomness["u_drop"].to(y.device) < self.label_dropout
            y = torch.where(drop, torch.full_like(y, self.null_label), y)
        gm_u = model(x_high.reshape(shape).to(x1.dtype), t_high.flatten().to(x1.dtype), y)
        gm_u = gm_u.map(lambda v: v.float())
        trans = reverse_transition(u_to_x0(gm_u, x_high, t_high), x_high, t_high, t_low)
        nll = gm_nll(trans, x_low)
        return self.weight * nll.flatten(1).mean(1)
