"""GMFlow's GM-DiT: DiT-XL/2 whose output layer predicts a per-pixel K-component Gaussian mixture.

The parameter names are those of the released Diffusers checkpoint (``Lakonik/gmflow_imagenet_k8_ema``,
``transformer/``): a Diffusers ``DiTTransformer2DModel`` trunk (``pos_embed.proj``, ``emb.timestep_embedder``,
``emb.class_embedder.embedding_table``, ``transformer_blocks.N.{norm1.linear, attn1.to_q/k/v/out.0,
ff.net.0.proj, ff.net.2}``, ``proj_out_1``) with ``proj_out_2`` widened to ``p^2 K (C + 1)`` channels and the
log-std MLP ``gm_out.logstd_layers`` on the stop-gradient conditioning embedding.

``forward(x, t, y) -> GaussianMixture`` over ``u = eps - x0`` with ``t`` in
:attr:`TimeConvention.DATA_AT_0` (t = 1 noise), embedded as ``1000 t``; ``y = num_classes`` is the null label.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from mixflow_bench.flow.conventions import TimeConvention
from mixflow_bench.flow.gmflow.heads import T_SCALE, GMOutputHead, timestep_features
from mixflow_bench.flow.gmflow.mixture import GaussianMixture
from mixflow_bench.models.layers import PatchEmbed, attend, check_attention, sincos_2d


class _TimestepEmbedding(nn.Module):
    def __init__(self, hidden: int, freq: int = 256) -> None:
        super().__init__()
        self.linear_1, self.linear_2 = nn.Linear(freq, hidden), nn.Linear(hidden, hidden)

    def forward(self, feats: Tensor) -> Tensor:
        return self.linear_2(F.silu(self.linear_1(feats)))


class _LabelEmbedding(nn.Module):
    def __init__(self, num_classes: int, hidden: int) -> None:
        super().__init__()
        self.embedding_table = nn.Embedding(num_classes + 1, hidden)

    def forward(self, y: Tensor) -> Tensor:
        return self.embedding_table(y)


class _Conditioning(nn.Module):
    """Time (sinusoid of 1000 t, DiT layout: no frequency shift) plus class embedding."""

    def __init__(self, num_classes: int, hidden: int) -> None:
        super().__init__()
        self.timestep_embedder = _TimestepEmbedding(hidden)
        self.class_embedder = _LabelEmbedding(num_classes, hidden)

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        feats = timestep_features(t * T_SCALE, 256, shift=0.0).to(self.timestep_embedder.linear_1.weight.dtype)
        return self.timestep_embedder(feats) + self.class_embedder(y)


class _AdaNormZero(nn.Module):
    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.linear = nn.Linear(hidden, 6 * hidden)


class _Attention(nn.Module):
    def __init__(self, hidden: int, heads: int, attention: str) -> None:
        super().__init__()
        self.heads, self.attention = heads, check_attention(attention)
        self.to_q, self.to_k, self.to_v = (nn.Linear(hidden, hidden) for _ in range(3))
        self.to_out = nn.ModuleList([nn.Linear(hidden, hidden), nn.Dropout(0.0)])

    def forward(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        q, k, v = (
            f(x).reshape(b, n, self.heads, d // self.heads).transpose(1, 2) for f in (self.to_q, self.to_k, self.to_v)
        )
        out = attend(q, k, v, self.attention).transpose(1, 2).reshape(b, n, d)
        return self.to_out[0](out)


class _GeluProj(nn.Module):
    def __init__(self, hidden: int, inner: int) -> None:
        super().__init__()
        self.proj = nn.Linear(hidden, inner)

    def forward(self, x: Tensor) -> Tensor:
        return F.gelu(self.proj(x), approximate="tanh")


class _FeedForward(nn.Module):
    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.net = nn.ModuleList([_GeluProj(hidden, 4 * hidden), nn.Dropout(0.0), nn.Linear(4 * hidden, hidden)])

    def forward(self, x: Tensor) -> Tensor:
        return self.net[2](self.net[0](x))


class GMDiTBlock(nn.Module):
    """adaLN-Zero DiT block with the Diffusers names (norm1 eps 1e-6, norm3 eps 1e-5, both without affine)."""

    def __init__(self, hidden: int, heads: int, attention: str = "sdpa") -> None:
        super().__init__()
        self.norm1 = _AdaNormZero(hidden)
        self.attn1 = _Attention(hidden, heads, attention)
        self.ff = _FeedForward(hidden)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = self.norm1.linear(F.silu(emb)).chunk(6, dim=1)
        h = F.layer_norm(x, x.shape[-1:], eps=1e-6) * (1 + scale_a[:, None]) + shift_a[:, None]
        x = x + gate_a[:, None] * self.attn1(h)
        h = F.layer_norm(x, x.shape[-1:], eps=1e-5) * (1 + scale_m[:, None]) + shift_m[:, None]
        return x + gate_m[:, None] * self.ff(h)


class GMDiT(nn.Module):
    """GM-DiT (see module doc). ``num_gaussians`` is K; the released model has K = 8, XL/2, 4 x 32 x 32 latents."""

    convention = TimeConvention.DATA_AT_0

    def __init__(
        self,
        num_gaussians: int = 8,
        input_size: int = 32,
        patch_size: int = 2,
        in_channels: int = 4,
        hidden: int = 1152,
        depth: int = 28,
        heads: int = 16,
        num_classes: int = 1000,
        logstd_inner: int = 1024,
        attention: str = "sdpa",
    ) -> None:
        super().__init__()
        self.num_gaussians, self.num_classes, self.patch_size = num_gaussians, num_classes, patch_size
        self.in_channels, self.hidden = in_channels, hidden
        self.pos_embed = PatchEmbed(input_size, patch_size, in_channels, hidden)
        self.register_buffer("pos_table", sincos_2d(hidden, input_size // patch_size)[None], persistent=False)
        self.emb = _Conditioning(num_classes, hidden)
        self.transformer_blocks = nn.ModuleList(GMDiTBlock(hidden, heads, attention) for _ in range(depth))
        self.gm_out = GMOutputHead(num_gaussians, in_channels, hidden, inner=logstd_inner)
        self.proj_out_1 = nn.Linear(hidden, 2 * hidden)
        self.proj_out_2 = nn.Linear(hidden, patch_size * patch_size * self.gm_out.channels)
        nn.init.zeros_(self.proj_out_1.weight)
        nn.init.zeros_(self.proj_out_1.bias)

    def set_attention(self, attention: str) -> None:
        for block in self.transformer_blocks:
            block.attn1.attention = check_attention(attention)

    def forward(self, x: Tensor, t: Tensor, y: Tensor) -> GaussianMixture:
        b, _, h, w = x.shape
        p = self.patch_size
        tokens = self.pos_embed(x) + self.pos_table.to(x.dtype)
        cond = self.emb(t, y)
        for block in self.transformer_blocks:
            tokens = block(tokens, cond)
        shift, scale = self.proj_out_1(F.silu(cond)).chunk(2, dim=1)
        tokens = F.layer_norm(tokens, tokens.shape[-1:], eps=1e-6) * (1 + scale[:, None]) + shift[:, None]
        out = self.proj_out_2(tokens).reshape(b, h // p, w // p, p, p, -1)
        out = out.permute(0, 5, 1, 3, 2, 4).reshape(b, -1, h, w)
        return self.gm_out(out, cond)

    def mean_velocity(self, x: Tensor, t: Tensor, y: Tensor) -> Tensor:
        """The GM mean ``E[u | x_t]`` (``dx/dt`` in DATA_AT_0 time): the flow-matching velocity."""
        return self.forward(x, t, y).mean()

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """Strict by default; a checkpoint with another number of components is a clear ValueError."""
        check_components(state_dict, self.num_gaussians, self.in_channels, self.patch_size)
        return super().load_state_dict(state_dict, strict=strict, assign=assign)


def checkpoint_components(state: dict[str, Tensor], channels: int = 4, patch_size: int = 2) -> int | None:
    """K of a GM-DiT state dict, from ``proj_out_2`` (``p^2 K (C + 1)`` rows); None if absent."""
    weight = state.get("proj_out_2.weight")
    if weight is None:
        return None
    rows = weight.shape[0]
    per = patch_size * patch_size * (channels + 1)
    return rows // per if rows % per == 0 else None


def check_components(state: dict[str, Tensor], num_gaussians: int, channels: int = 4, patch_size: int = 2) -> None:
    """Raise ValueError when a checkpoint's K differs from the model's (the recipe's ``num_gaussians``)."""
    k = checkpoint_components(state, channels, patch_size)
    if k is not None and k != num_gaussians:
        raise ValueError(
            f"the checkpoint has K = {k} Gaussian components but the model was built with K = {num_gaussians} "
            f"(set model.overrides.num_gaussians: {k})"
        )


def gmdit_xl2(num_gaussians: int = 8, input_size: int = 32, **overrides) -> GMDiT:
    """GM-DiT-XL/2 (28 layers, 16 heads x 72, hidden 1152) on 4-channel SD-VAE latents."""
    return GMDiT(num_gaussians=num_gaussians, input_size=input_size, **overrides)
