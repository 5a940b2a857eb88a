"""RAE stage 2: DiT with a wide DDT head (DiT^DH) on DINOv2 latents (``DATA_AT_0``: t=0 data, t=1 noise).

A trunk of ``depth[0]`` blocks at width ``hidden_size[0]`` reads the noisy latent (1x1 patches plus a fixed
sin-cos position table) under a global time+label conditioning. Its tokens, mixed with the time embedding,
become a per-token conditioning for a head of ``depth[1]`` wider blocks that re-embed the same noisy latent
and predict the velocity ``noise - data``. Blocks use RMSNorm, SwiGLU and 2-D axial rotary embeddings; time
enters through Gaussian-Fourier features whose random frequencies ``t_embedder.W`` are part of the checkpoint.

State-dict names and shapes equal those of ``DiTwDDTHead`` in ``bytetriper/RAE`` (including the persistent
RoPE tables ``enc_feat_rope.freqs_*``/``dec_feat_rope.freqs_*``), so ``stage2_model.pt`` loads strictly.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mixflow_bench.flow.conventions import TimeConvention
from mixflow_bench.models.layers import (
    Attention,
    LabelEmbedder,
    PatchEmbed,
    attend,
    check_time_and_labels,
    init_patch_embed,
    modulate,
    set_blocks_attention,
    sincos_2d,
    zero_adaln_and_output,
)

# hidden sizes, depths and heads of (trunk, head) for the released models
DITDH_SIZES: dict[str, dict[str, tuple[int, int]]] = {
    "XL": {"hidden_size": (1152, 2048), "depth": (28, 2), "num_heads": (16, 16)},
    "S": {"hidden_size": (384, 2048), "depth": (12, 2), "num_heads": (6, 16)},
}


class RMSNorm(nn.Module):
    """``x / sqrt(mean(x^2) + eps) * weight``, normalised in float32."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        xf = x.float()
        normed = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return normed.type_as(x) * self.weight


def axial_rope_angles(head_dim: int, grid: int, theta: float = 10000.0) -> Tensor:
    """Rotation angles (grid*grid, head_dim) of 2-D axial RoPE, tokens in row-major order.

    The first half of the head channels rotates with the row index, the second half with the column index;
    inside each half, channel pairs (2m, 2m+1) share the frequency ``theta^(-2m/(head_dim/2))``.
    """
    if head_dim % 4:
        raise ValueError(f"2-D RoPE needs a head dimension divisible by 4, got {head_dim}")
    half = head_dim // 2
    inv_freq = 1.0 / theta ** (torch.arange(0, half, 2, device="cpu")[: half // 2].float() / half)
    pos = torch.arange(grid, dtype=torch.float32, device="cpu")
    per_axis = (pos[:, None] * inv_freq[None]).repeat_interleave(2, dim=-1)  # (grid, half)
    rows = per_axis[:, None, :].expand(grid, grid, half)
    cols = per_axis[None, :, :].expand(grid, grid, half)
    table = torch.cat([rows, cols], dim=-1).reshape(grid * grid, head_dim)
    return table.to(torch.get_default_device())


def rotate_pairs(x: Tensor) -> Tensor:
    """(x0, x1, x2, x3, ...) -> (-x1, x0, -x3, x2, ...)."""
    pairs = x.unflatten(-1, (-1, 2))
    return torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)


class AxialRope2D(nn.Module):
    """2-D rotary embedding of (B, heads, N, head_dim) queries/keys; the cos/sin tables are checkpointed."""

    def __init__(self, head_dim: int, grid: int) -> None:
        super().__init__()
        angles = axial_rope_angles(head_dim, grid)
        self.register_buffer("freqs_cos", angles.cos())
        self.register_buffer("freqs_sin", angles.sin())

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-2:] != self.freqs_cos.shape:
            raise ValueError(f"RoPE table is {tuple(self.freqs_cos.shape)}, input tokens are {tuple(x.shape[-2:])}")
        return x * self.freqs_cos + rotate_pairs(x) * self.freqs_sin


class RopeAttention(Attention):
    """Self-attention with rotary queries/keys (parameters ``qkv`` and ``proj``)."""

    def forward(self, x: Tensor, rope: AxialRope2D) -> Tensor:
        q, k, v = self.heads(x)
        q, k = rope(q).to(v.dtype), rope(k).to(v.dtype)
        return self.merge(attend(q, k, v, self.attention))


class SwiGLU(nn.Module):
    """``w3(silu(a) * b)`` where ``(a, b)`` are the two halves of ``w12(x)``."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.w12 = nn.Linear(dim, 2 * hidden)
        self.w3 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        a, b = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(a) * b)

    @torch.no_grad()
    def pad_hidden(self, multiple: int) -> bool:
        """Zero-pad the hidden width up to a multiple of ``multiple``, in place; True if it changed.

        The DDT heads' width is ``int(2/3 * 4 * 2048) = 5461``: odd, so cuBLAS can only use its slow unaligned
        kernels for ``w3`` and for the second half of ``w12``'s output, and FP8 matmuls (sizes in multiples of 16)
        skip both linears. Padded units have zero weights and biases in both halves of ``w12``, so they output
        ``silu(0) * 0 = 0`` and meet zero columns of ``w3``: the function is the same in exact arithmetic; only the
        rounding of the matmuls (other kernels) differs. The state dict's shapes change, so only run-time copies
        are padded (the fast sampling path), never a model that is saved or trained.
        """
        hidden = self.w3.in_features
        extra = -hidden % multiple
        if extra == 0:
            return False

        def pad_halves(t: Tensor) -> Tensor:  # (2*hidden, ...) -> (2*padded, ...): zeros after each of a and b
            a, b = t.chunk(2)
            widths = (0, 0) * (t.ndim - 1) + (0, extra)
            return torch.cat([F.pad(a, widths), F.pad(b, widths)])

        w12, w3 = self.w12, self.w3
        new12 = nn.Linear(w12.in_features, 2 * (hidden + extra), bias=w12.bias is not None).to(w12.weight)
        new3 = nn.Linear(hidden + extra, w3.out_features, bias=w3.bias is not None).to(w3.weight)
        new12.weight.copy_(pad_halves(w12.weight))
        new3.weight.copy_(F.pad(w3.weight, (0, extra)))
        if w12.bias is not None:
            new12.bias.copy_(pad_halves(w12.bias))
        if w3.bias is not None:
            new3.bias.copy_(w3.bias)
        self.w12 = new12.requires_grad_(w12.weight.requires_grad)
        self.w3 = new3.requires_grad_(w3.weight.requires_grad)
        return True


def pad_swiglu_hidden(model: nn.Module, multiple: int = 16) -> int:
    """Pad every :class:`SwiGLU` of ``model`` in place (:meth:`SwiGLU.pad_hidden`); returns how many changed."""
    return sum(m.pad_hidden(multiple) for m in model.modules() if isinstance(m, SwiGLU))


def swiglu_needs_padding(model: nn.Module, multiple: int = 16) -> bool:
    """Whether any :class:`SwiGLU` of ``model`` has a hidden width that is not a multiple of ``multiple``."""
    return any(m.w3.in_features % multiple for m in model.modules() if isinstance(m, SwiGLU))


class DDTBlock(nn.Module):
    """RMSNorm/RoPE/SwiGLU block; adaLN shift/scale/gate from a (B,D) or per-token (B,N,D) condition."""

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float = 4.0, attention: str = "sdpa") -> None:
        super().__init__()
        self.norm1 = RMSNorm(hidden_size)
        self.attn = RopeAttention(hidden_size, num_heads, attention=attention)
        self.norm2 = RMSNorm(hidden_size)
        self.mlp = SwiGLU(hidden_size, int(2 / 3 * int(hidden_size * mlp_ratio)))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 6 * hidden_size))

    def forward(self, x: Tensor, c: Tensor, rope: AxialRope2D) -> Tensor:
        if c.ndim == 2:
            c = c.unsqueeze(1)
        shift1, scale1, gate1, shift2, scale2, gate2 = self.adaLN_modulation(c).chunk(6, dim=-1)
        x = x + gate1 * self.attn(modulate(self.norm1(x), shift1, scale1), rope)
        return x + gate2 * self.mlp(modulate(self.norm2(x), shift2, scale2))


class DDTFinalLayer(nn.Module):
    """RMSNorm modulated per token, then a linear map to output channels."""

    def __init__(self, hidden_size: int, out_channels: int) -> None:
        super().__init__()
        self.norm_final = RMSNorm(hidden_size)
        self.linear = nn.Linear(hidden_size, out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size))

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=-1)
        return self.linear(modulate(self.norm_final(x), shift, scale))


class GaussianFourierEmbedding(nn.Module):
    """Time features ``[sin(2 pi t W), cos(2 pi t W)]`` with fixed random ``W``, then an MLP."""

    def __init__(self, hidden_size: int, embedding_size: int = 256, scale: float = 1.0) -> None:
        super().__init__()
        self.W = nn.Parameter(torch.randn(embedding_size) * scale, requires_grad=False)
        self.mlp = nn.Sequential(
            nn.Linear(2 * embedding_size, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size)
        )

    def features(self, t: Tensor) -> Tensor:
        """The (B, 2*embedding_size) Fourier features of times ``t``."""
        angles = t[:, None] * self.W.detach()[None, :] * 2 * math.pi
        return torch.cat([angles.sin(), angles.cos()], dim=-1)

    def forward(self, t: Tensor) -> Tensor:
        return self.mlp(self.features(t))


class DiTDH(nn.Module):
    """DiT^DH velocity network, ``forward(x, t, y)`` with t in ``DATA_AT_0`` (t=0 data, t=1 noise)."""

    convention = TimeConvention.DATA_AT_0
    num_classes = 1000

    def __init__(
        self,
        input_size: int = 16,
        in_channels: int = 768,
        hidden_size: tuple[int, int] = (1152, 2048),
        depth: tuple[int, int] = (28, 2),
        num_heads: tuple[int, int] = (16, 16),
        mlp_ratio: float = 4.0,
        num_classes: int = 1000,
        attention: str = "sdpa",
    ) -> None:
        super().__init__()
        enc_h, dec_h = hidden_size
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.input_size = input_size
        self.num_trunk_blocks, self.num_head_blocks = depth
        self.x_embedder = PatchEmbed(input_size, 1, in_channels, dec_h)
        self.s_embedder = PatchEmbed(input_size, 1, in_channels, enc_h)
        self.s_projector = nn.Linear(enc_h, dec_h) if enc_h != dec_h else nn.Identity()
        self.t_embedder = GaussianFourierEmbedding(enc_h)
        self.y_embedder = LabelEmbedder(num_classes, enc_h)
        self.final_layer = DDTFinalLayer(dec_h, in_channels)
        self.pos_embed = nn.Parameter(sincos_2d(enc_h, input_size).unsqueeze(0), requires_grad=False)
        self.enc_feat_rope = AxialRope2D(enc_h // num_heads[0], input_size)
        self.dec_feat_rope = AxialRope2D(dec_h // num_heads[1], input_size)
        self.blocks = nn.ModuleList(
            [DDTBlock(enc_h, num_heads[0], mlp_ratio, attention) for _ in range(depth[0])]
            + [DDTBlock(dec_h, num_heads[1], mlp_ratio, attention) for _ in range(depth[1])]
        )
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """RAE's initialisation: linear-style patch embeddings, N(0, 0.02) tables, zeroed adaLN and output."""
        init_patch_embed(self.x_embedder)
        init_patch_embed(self.s_embedder)
        nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        zero_adaln_and_output(self.blocks, self.final_layer)

    def set_attention(self, attention: str) -> None:
        """Switch every block between ``"sdpa"`` and ``"math"`` attention."""
        set_blocks_attention(self.blocks, attention)

    def forward(self, x: Tensor, t: Tensor, y: Tensor) -> Tensor:
        """Velocity dx/dt (``DATA_AT_0``) at latents ``x`` (B,C,H,W), times ``t`` (B,), labels ``y`` (B,)."""
        check_time_and_labels(x, t, y)
        t_emb = self.t_embedder(t)
        c = F.silu(t_emb + self.y_embedder(y))
        s = self.s_embedder(x) + self.pos_embed
        for block in self.blocks[: self.num_trunk_blocks]:
            s = block(s, c, self.enc_feat_rope)
        s = self.s_projector(F.silu(s + t_emb.unsqueeze(1)))
        h = self.x_embedder(x)
        for block in self.blocks[self.num_trunk_blocks :]:
            h = block(h, s, self.dec_feat_rope)
        out = self.final_layer(h, s)  # (B, N, C)
        b, g = x.shape[0], self.input_size
        return out.transpose(1, 2).reshape(b, self.in_channels, g, g)


def dit_dh(size: str = "XL", input_size: int = 16, **overrides) -> DiTDH:
    """Build DiT^DH-{XL,S} for a 16x16 (256 px) or 32x32 (512 px) latent grid."""
    key = size.upper()
    if key not in DITDH_SIZES:
        raise ValueError(f"unknown DiT^DH size {size!r}; valid: {sorted(DITDH_SIZES)}")
    kwargs = dict(DITDH_SIZES[key], input_size=input_size)
    kwargs.update(overrides)
    return DiTDH(**kwargs)
