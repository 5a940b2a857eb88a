"""Building blocks shared by the transformer generators of the zoo (SiT, REPA, RAE DiT^DH).

The attention, MLP and patch-embedding modules are written here rather than taken from timm so that the
package does not depend on timm; their parameter names (``qkv``, ``proj``, ``fc1``, ``fc2``, ``proj`` of the
patch embedding) equal timm's, which is what the official checkpoints were saved with.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

AttentionKind = Literal["sdpa", "math"]
ATTENTION_KINDS: tuple[str, ...] = ("sdpa", "math")


def check_attention(kind: str) -> str:
    """Validate an attention-implementation switch."""
    if kind not in ATTENTION_KINDS:
        raise ValueError(f"attention must be one of {ATTENTION_KINDS}, got {kind!r}")
    return kind


def attend(q: Tensor, k: Tensor, v: Tensor, kind: str) -> Tensor:
    """Softmax attention over (B, heads, N, head_dim) tensors, fused (``sdpa``) or written out (``math``)."""
    if kind == "sdpa":
        return F.scaled_dot_product_attention(q, k, v)
    weights = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)
    return weights.softmax(dim=-1) @ v


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """adaLN modulation ``x * (1 + scale) + shift`` with (B, D) or per-token (B, N, D) shift/scale."""
    if shift.ndim == x.ndim - 1:
        shift, scale = shift.unsqueeze(1), scale.unsqueeze(1)
    return x * (1 + scale) + shift


def sincos_1d(dim: int, positions: Tensor) -> Tensor:
    """MAE-style 1-D sin-cos table: ``[sin(p*w_k), cos(p*w_k)]`` with ``w_k = 10000^(-2k/dim)``; float64."""
    if dim % 2:
        raise ValueError(f"sin-cos embedding needs an even dimension, got {dim}")
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64, device="cpu") / (dim / 2))
    angles = positions.to("cpu", torch.float64).reshape(-1, 1) * omega.reshape(1, -1)
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def sincos_2d(dim: int, grid: int, cls_token: bool = False) -> Tensor:
    """Fixed 2-D sin-cos position table (grid*grid [+1], dim) in float32, tokens in row-major order.

    The first half of the channels encodes the column index, the second half the row index (the layout of
    the MAE/DiT tables that the official checkpoints store).
    """
    # computed on CPU, then moved to the default device (cheap under a ``torch.device("meta")`` context)
    coords = torch.arange(grid, dtype=torch.float64, device="cpu")
    rows, cols = torch.meshgrid(coords, coords, indexing="ij")
    table = torch.cat([sincos_1d(dim // 2, cols), sincos_1d(dim // 2, rows)], dim=1)
    if cls_token:
        table = torch.cat([torch.zeros(1, dim, dtype=table.dtype, device="cpu"), table], dim=0)
    return table.float().to(torch.get_default_device())


class PatchEmbed(nn.Module):
    """Non-overlapping patches -> tokens via a strided convolution (parameter ``proj``)."""

    def __init__(self, input_size: int, patch_size: int, in_channels: int, hidden_size: int) -> None:
        super().__init__()
        if input_size % patch_size:
            raise ValueError(f"input size {input_size} is not divisible by patch size {patch_size}")
        self.input_size = input_size
        self.patch_size = patch_size
        self.in_channels = in_channels
        self.grid = input_size // patch_size
        self.num_patches = self.grid**2
        self.proj = nn.Conv2d(in_channels, hidden_size, kernel_size=patch_size, stride=patch_size, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        expected = (self.in_channels, self.input_size, self.input_size)
        if x.ndim != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"expected input of shape (B, {', '.join(map(str, expected))}), got {tuple(x.shape)}")
        return self.proj(x).flatten(2).transpose(1, 2)


class TimestepEmbedder(nn.Module):
    """Sinusoidal embedding of a scalar time (``[cos, sin]``, max period 1e4) followed by a 2-layer MLP."""

    def __init__(self, hidden_size: int, frequency_size: int = 256, max_period: float = 10000.0) -> None:
        super().__init__()
        self.frequency_size = frequency_size
        self.max_period = max_period
        self.mlp = nn.Sequential(nn.Linear(frequency_size, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size))

    def frequencies(self, t: Tensor) -> Tensor:
        """The (B, frequency_size) sinusoid features of times ``t`` (used as given: no rescaling)."""
        half = self.frequency_size // 2
        rates = torch.exp(-math.log(self.max_period) * torch.arange(half, dtype=torch.float32) / half)
        angles = t.float()[:, None] * rates.to(t.device)[None]
        feats = torch.cat([angles.cos(), angles.sin()], dim=-1)
        if self.frequency_size % 2:
            feats = torch.cat([feats, feats.new_zeros(feats.shape[0], 1)], dim=-1)
        return feats

    def forward(self, t: Tensor) -> Tensor:
        feats = self.frequencies(t)
        return self.mlp(feats.to(self.mlp[0].weight.dtype))


class LabelEmbedder(nn.Module):
    """Class-label table with one extra row (index ``num_classes``) for the null label used by guidance.

    Labels are never dropped here: label dropout for guidance training belongs to the training objective.
    """

    def __init__(self, num_classes: int, hidden_size: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.embedding_table = nn.Embedding(num_classes + 1, hidden_size)

    def forward(self, labels: Tensor) -> Tensor:
        if labels.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"class labels must be an integer tensor, got {labels.dtype}")
        # The range check needs a host sync, so it runs on CPU only (CUDA raises its own device assert).
        if (
            labels.device.type == "cpu"
            and labels.numel()
            and (int(labels.min()) < 0 or int(labels.max()) > self.num_classes)
        ):
            raise ValueError(
                f"class labels must lie in [0, {self.num_classes}] ({self.num_classes} is the null label), "
                f"got range [{int(labels.min())}, {int(labels.max())}]"
            )
        return self.embedding_table(labels)


class Attention(nn.Module):
    """Multi-head self-attention with fused ``qkv`` and output ``proj`` linears."""

    def __init__(self, dim: int, num_heads: int, attention: str = "sdpa") -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.attention = check_attention(attention)
        self.qkv = nn.Linear(dim, 3 * dim, bias=True)
        self.proj = nn.Linear(dim, dim)

    def heads(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Split tokens into (B, heads, N, head_dim) queries, keys and values."""
        b, n, _ = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return q, k, v

    def merge(self, out: Tensor) -> Tensor:
        """(B, heads, N, head_dim) -> projected (B, N, dim)."""
        b, _, n, _ = out.shape
        return self.proj(out.transpose(1, 2).reshape(b, n, -1))

    def forward(self, x: Tensor) -> Tensor:
        q, k, v = self.heads(x)
        return self.merge(attend(q, k, v, self.attention))


class Mlp(nn.Module):
    """Two-layer feed-forward ``fc2(gelu_tanh(fc1(x)))``."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU(approximate="tanh")
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


def check_time_and_labels(x: Tensor, t: Tensor, y: Tensor) -> None:
    """Raise a clear error when ``t`` or ``y`` is not a (B,) tensor matching the batch of ``x``."""
    b = x.shape[0]
    if not isinstance(t, Tensor) or t.shape != (b,):
        raise ValueError(f"t must be a ({b},) tensor of times, got {getattr(t, 'shape', type(t))}")
    if not isinstance(y, Tensor) or y.shape != (b,):
        raise ValueError(f"y must be a ({b},) tensor of class labels, got {getattr(y, 'shape', type(y))}")


def dit_init(module: nn.Module) -> None:
    """DiT initialisation of plain linears: Xavier-uniform weights, zero biases."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def init_patch_embed(embed: PatchEmbed) -> None:
    """Initialise a patch embedding like a linear layer (Xavier on the flattened kernel)."""
    w = embed.proj.weight.data
    nn.init.xavier_uniform_(w.view(w.shape[0], -1))
    nn.init.zeros_(embed.proj.bias)


def zero_adaln_and_output(blocks: nn.ModuleList, final_layer: nn.Module) -> None:
    """DiT-style adaLN-Zero: every block's modulation and the final modulation and projection start at zero."""
    for block in blocks:
        nn.init.zeros_(block.adaLN_modulation[-1].weight)
        nn.init.zeros_(block.adaLN_modulation[-1].bias)
    for layer in (final_layer.adaLN_modulation[-1], final_layer.linear):
        nn.init.zeros_(layer.weight)
        nn.init.zeros_(layer.bias)


def set_blocks_attention(blocks: nn.ModuleList, attention: str) -> None:
    """Switch the ``attn`` of every block between ``"sdpa"`` and ``"math"`` attention."""
    check_attention(attention)
    for block in blocks:
        block.attn.attention = attention
