"""GM output heads: the head for patch transformers (pixel-wise K-GM) and GMFlow's toy MLP for 2-D data.

Both return a :class:`GaussianMixture` over ``u = eps - x0`` and take time in
:attr:`TimeConvention.DATA_AT_0` (t = 0 data, t = 1 noise), embedded as ``1000 t`` as GMFlow does. The shared
log-std comes from a small MLP; in the transformer head it reads the *stop-gradient* conditioning embedding.
The layers that would let the head start away from a single centred Gaussian are zero-initialised.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from mixflow_bench.flow.gmflow.mixture import GaussianMixture

T_SCALE = 1000.0  # GMFlow embeds 1000 t


def timestep_features(t: Tensor, dim: int, *, shift: float = 1.0, max_period: float = 10_000.0) -> Tensor:
    """``[cos(t f), sin(t f)]`` with ``f_k = max_period^(-k / (dim/2 - shift))`` (flip-sin-to-cos layout)."""
    half = dim // 2
    k = torch.arange(half, dtype=torch.float32, device=t.device)
    freqs = torch.exp(-math.log(max_period) * k / (half - shift))
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def coordinate_features(x: Tensor, dim: int, min_period: float = 5e-3, max_period: float = 50.0) -> Tensor:
    """Sin-cos features of each coordinate of (B, 2) points, periods log-spaced in [min, max]: (B, dim)."""
    half = dim // 4
    period = torch.logspace(
        math.log(min_period), math.log(max_period), half, base=math.e, dtype=x.dtype, device=x.device
    )
    arg = x.reshape(-1)[:, None] * (2 * math.pi / period)
    return torch.cat([torch.sin(arg), torch.cos(arg)], dim=-1).reshape(x.shape[0], dim)


class GMFlowToyMLP(nn.Module):
    """GMFlow's 2-D denoiser: time and coordinate embeddings, ``layers`` x (Linear + SiLU), three GM heads.

    ``forward(x (B, 2), t (B,) DATA_AT_0, y=None) -> GaussianMixture`` (one pixel with 2 channels).
    ``constant_logstd``: fix ``log s`` (0.0 with K = 1 is the plain L2 flow-matching model).
    Parameter names follow the official module, so its state dicts load strictly.
    """

    def __init__(
        self,
        num_gaussians: int = 64,
        hidden: int = 512,
        layers: int = 5,
        embed_dim: int = 256,
        constant_logstd: float | None = None,
    ) -> None:
        super().__init__()
        self.num_gaussians, self.embed_dim, self.constant_logstd = num_gaussians, embed_dim, constant_logstd
        mods: list[nn.Module] = []
        width = 2 * embed_dim
        for _ in range(layers):
            mods += [nn.Linear(width, hidden), nn.SiLU()]
            width = hidden
        self.net = nn.Sequential(*mods)
        self.out_means = nn.Linear(hidden, 2 * num_gaussians)
        self.out_logweights = nn.Linear(hidden, num_gaussians)
        if constant_logstd is None:
            self.out_logstds = nn.Linear(hidden, 1)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
                nn.init.zeros_(m.bias)
        nn.init.zeros_(self.out_logweights.weight)
        if constant_logstd is None:
            nn.init.zeros_(self.out_logstds.weight)

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> GaussianMixture:
        b = x.shape[0]
        x2 = x.reshape(b, 2)
        emb = torch.cat(
            [timestep_features(t * T_SCALE, self.embed_dim).to(x2), coordinate_features(x2, self.embed_dim)], dim=-1
        )
        feat = self.net(emb)
        k = self.num_gaussians
        means = self.out_means(feat).reshape(b, k, 2, 1, 1)
        logweights = self.out_logweights(feat).log_softmax(dim=-1).reshape(b, k, 1, 1, 1)
        if self.constant_logstd is None:
            logstds = self.out_logstds(feat).reshape(b, 1, 1, 1, 1)
        else:
            logstds = torch.full((b, 1, 1, 1, 1), float(self.constant_logstd), dtype=x2.dtype, device=x2.device)
        return GaussianMixture(means, logweights, logstds)


class GMOutputHead(nn.Module):
    """Pixel-wise GM head for patch transformers: split ``K*C + K`` channels into means and log-weights.

    ``forward(features (B, K*(C+1), H, W), cond_emb (B, E))``; ``log s`` is ``logstd_layers(cond_emb.detach())``,
    a ``layers``-deep SiLU MLP of width ``inner`` whose last layer starts at zero (s = 1 at init).
    """

    def __init__(self, num_gaussians: int, out_channels: int, embed_dim: int, inner: int = 1024, layers: int = 2):
        super().__init__()
        self.num_gaussians, self.out_channels = num_gaussians, out_channels
        mods: list[nn.Module] = []
        width = embed_dim
        for _ in range(layers - 1):
            mods += [nn.SiLU(), nn.Linear(width, inner)]
            width = inner
        mods += [nn.SiLU(), nn.Linear(width, 1)]
        self.logstd_layers = nn.Sequential(*mods)
        for m in self.logstd_layers:
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.zeros_(self.logstd_layers[-1].weight)

    @property
    def channels(self) -> int:
        """Channels the trunk must produce per pixel: ``K (C + 1)``."""
        return self.num_gaussians * (self.out_channels + 1)

    def forward(self, features: Tensor, cond_emb: Tensor) -> GaussianMixture:
        b, _, h, w = features.shape
        k, c = self.num_gaussians, self.out_channels
        means, logits = features.split([k * c, k], dim=1)
        logweights = logits.reshape(b, k, 1, h, w).log_softmax(dim=1)
        logstds = self.logstd_layers(cond_emb.detach()).reshape(b, 1, 1, 1, 1)
        return GaussianMixture(means.reshape(b, k, c, h, w), logweights, logstds)
