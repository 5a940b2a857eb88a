"""SiT: the DiT backbone with adaLN-Zero conditioning used as a velocity network (``DATA_AT_1``).

State-dict names and shapes equal those of the official SiT checkpoints (``willisma/SiT``), so the released
``SiT-XL-2-256.pt`` loads with ``strict=True``. With ``learn_sigma=True`` the last linear predicts
``2 * in_channels`` channels, as in that file; :meth:`SiT.forward` returns only the first ``in_channels``
(the velocity), the rest are unused by flow sampling.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mixflow_bench.flow.conventions import TimeConvention
from mixflow_bench.models.layers import (
    Attention,
    LabelEmbedder,
    Mlp,
    PatchEmbed,
    TimestepEmbedder,
    check_time_and_labels,
    dit_init,
    init_patch_embed,
    modulate,
    set_blocks_attention,
    sincos_2d,
    zero_adaln_and_output,
)

# (depth, hidden size, heads) per model size, as in the SiT/DiT papers.
SIT_SIZES: dict[str, tuple[int, int, int]] = {
    "S": (12, 384, 6),
    "B": (12, 768, 12),
    "L": (24, 1024, 16),
    "XL": (28, 1152, 16),
}


class SiTBlock(nn.Module):
    """Pre-norm transformer block whose norms are shifted, scaled and gated by the conditioning vector."""

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float = 4.0, attention: str = "sdpa") -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(hidden_size, num_heads, attention=attention)
        self.norm2 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(hidden_size, int(hidden_size * mlp_ratio))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 6 * hidden_size))

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.adaLN_modulation(c).chunk(6, dim=-1)
        x = x + gate1.unsqueeze(1) * self.attn(modulate(self.norm1(x), shift1, scale1))
        return x + gate2.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift2, scale2))


class FinalLayer(nn.Module):
    """Modulated LayerNorm followed by the linear map from tokens to patch pixels."""

    def __init__(self, hidden_size: int, patch_size: int, out_channels: int) -> None:
        super().__init__()
        self.norm_final = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden_size, patch_size * patch_size * out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size))

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=-1)
        return self.linear(modulate(self.norm_final(x), shift, scale))


class SiT(nn.Module):
    """Class-conditional SiT velocity network, ``forward(x, t, y)`` with t in ``DATA_AT_1`` (t=1 is data).

    ``attention`` picks the attention kernel: ``"sdpa"`` (``F.scaled_dot_product_attention``) or ``"math"``
    (explicit softmax(q k^T) v).
    """

    convention = TimeConvention.DATA_AT_1
    num_classes = 1000

    def __init__(
        self,
        input_size: int = 32,
        patch_size: int = 2,
        in_channels: int = 4,
        hidden_size: int = 1152,
        depth: int = 28,
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
        num_classes: int = 1000,
        learn_sigma: bool = True,
        attention: str = "sdpa",
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.learn_sigma = learn_sigma
        self.out_channels = 2 * in_channels if learn_sigma else in_channels
        self.patch_size = patch_size
        self.x_embedder = PatchEmbed(input_size, patch_size, in_channels, hidden_size)
        self.t_embedder = TimestepEmbedder(hidden_size)
        self.y_embedder = LabelEmbedder(num_classes, hidden_size)
        grid = self.x_embedder.grid
        self.pos_embed = nn.Parameter(sincos_2d(hidden_size, grid).unsqueeze(0), requires_grad=False)
        self.blocks = nn.ModuleList(
            [SiTBlock(hidden_size, num_heads, mlp_ratio, attention=attention) for _ in range(depth)]
        )
        self.final_layer = FinalLayer(hidden_size, patch_size, self.out_channels)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """DiT initialisation: Xavier linears, N(0, 0.02) embeddings, zeroed adaLN and output layers."""
        dit_init(self)
        init_patch_embed(self.x_embedder)
        nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        zero_adaln_and_output(self.blocks, self.final_layer)

    def set_attention(self, attention: str) -> None:
        """Switch every block between ``"sdpa"`` and ``"math"`` attention."""
        set_blocks_attention(self.blocks, attention)

    def unpatchify(self, tokens: Tensor, channels: int) -> Tensor:
        """(B, N, p*p*C) tokens -> (B, C, H, W) image, patches in row-major order."""
        b, n, _ = tokens.shape
        p, g = self.patch_size, self.x_embedder.grid
        x = tokens.reshape(b, g, g, p, p, channels)
        return torch.einsum("nhwpqc->nchpwq", x).reshape(b, channels, g * p, g * p)

    def trunk(self, x: Tensor, t: Tensor, y: Tensor, capture_after: int | None = None):
        """Run embeddings and blocks; returns (tokens, conditioning, tokens after block ``capture_after``)."""
        check_time_and_labels(x, t, y)
        h = self.x_embedder(x) + self.pos_embed
        c = self.t_embedder(t) + self.y_embedder(y)
        captured = None
        for i, block in enumerate(self.blocks):
            h = block(h, c)
            if capture_after is not None and i + 1 == capture_after:
                captured = h
        return h, c, captured

    def forward(self, x: Tensor, t: Tensor, y: Tensor) -> Tensor:
        """Velocity dx/dt (``DATA_AT_1``) at latents ``x`` (B,C,H,W), times ``t`` (B,), labels ``y`` (B,)."""
        h, c, _ = self.trunk(x, t, y)
        out = self.unpatchify(self.final_layer(h, c), self.out_channels)
        return out[:, : self.in_channels] if self.learn_sigma else out


def sit(size: str, patch_size: int, input_size: int = 32, **overrides) -> SiT:
    """Build SiT-{S,B,L,XL}/{2,4,8}; ``overrides`` are passed to :class:`SiT` (e.g. ``learn_sigma``)."""
    key = size.upper()
    if key not in SIT_SIZES:
        raise ValueError(f"unknown SiT size {size!r}; valid: {sorted(SIT_SIZES)}")
    if patch_size not in (2, 4, 8):
        raise ValueError(f"SiT patch size must be 2, 4 or 8, got {patch_size}")
    depth, hidden, heads = SIT_SIZES[key]
    kwargs = dict(input_size=input_size, patch_size=patch_size, hidden_size=hidden, depth=depth, num_heads=heads)
    kwargs.update(overrides)
    return SiT(**kwargs)
