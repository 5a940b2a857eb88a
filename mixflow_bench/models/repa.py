"""REPA's SiT-XL/2: SiT without sigma channels plus the alignment projector (``DATA_AT_0``).

The released REPA checkpoint (``last.pt``) stores the projector MLP ``projectors.0.{0,2,4}`` next to the SiT
weights, so it is built here to load strictly. Sampling never uses it: :meth:`RepaSiT.forward` returns the
velocity only, :meth:`RepaSiT.projector_features` returns the projected tokens after block ``encoder_depth``.
REPA's time runs the other way from SiT's: t=0 is data, t=1 noise, and the velocity is ``noise - data``.
"""

from __future__ import annotations

from torch import Tensor, nn

from mixflow_bench.flow.conventions import TimeConvention
from mixflow_bench.models.sit import SIT_SIZES, SiT


def projector_mlp(hidden_size: int, projector_dim: int, z_dim: int) -> nn.Sequential:
    """Linear -> SiLU -> Linear -> SiLU -> Linear (indices 0, 2, 4 hold the weights)."""
    return nn.Sequential(
        nn.Linear(hidden_size, projector_dim),
        nn.SiLU(),
        nn.Linear(projector_dim, projector_dim),
        nn.SiLU(),
        nn.Linear(projector_dim, z_dim),
    )


class RepaSiT(SiT):
    """SiT trained with representation alignment; ``forward(x, t, y)``, t in ``DATA_AT_0`` (t=0 data)."""

    convention = TimeConvention.DATA_AT_0

    def __init__(
        self,
        *,
        encoder_depth: int = 8,
        z_dims: tuple[int, ...] = (768,),
        projector_dim: int = 2048,
        **sit_kwargs,
    ) -> None:
        sit_kwargs.setdefault("learn_sigma", False)
        super().__init__(**sit_kwargs)
        hidden = self.pos_embed.shape[-1]
        if not 1 <= encoder_depth <= len(self.blocks):
            raise ValueError(f"encoder_depth must lie in [1, {len(self.blocks)}], got {encoder_depth}")
        self.encoder_depth = encoder_depth
        self.projectors = nn.ModuleList([projector_mlp(hidden, projector_dim, z) for z in z_dims])
        for proj in self.projectors:
            for m in proj.modules():
                if isinstance(m, nn.Linear):
                    nn.init.xavier_uniform_(m.weight)
                    nn.init.zeros_(m.bias)

    def projector_features(self, x: Tensor, t: Tensor, y: Tensor) -> list[Tensor]:
        """Projected tokens (B, N, z_dim) after block ``encoder_depth``, one per projector (``DATA_AT_0``)."""
        _, _, h = self.trunk(x, t, y, capture_after=self.encoder_depth)
        return [proj(h) for proj in self.projectors]

    def forward_with_features(self, x: Tensor, t: Tensor, y: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Velocity and projector features from one pass (for REPA-style training; t: ``DATA_AT_0``)."""
        h, c, mid = self.trunk(x, t, y, capture_after=self.encoder_depth)
        out = self.unpatchify(self.final_layer(h, c), self.out_channels)[:, : self.in_channels]
        return out, [proj(mid) for proj in self.projectors]


def repa_sit(size: str = "XL", patch_size: int = 2, input_size: int = 32, **overrides) -> RepaSiT:
    """Build REPA's SiT-{size}/{patch_size} (defaults: the released SiT-XL/2 at 256 px)."""
    key = size.upper()
    if key not in SIT_SIZES:
        raise ValueError(f"unknown SiT size {size!r}; valid: {sorted(SIT_SIZES)}")
    depth, hidden, heads = SIT_SIZES[key]
    kwargs = dict(input_size=input_size, patch_size=patch_size, hidden_size=hidden, depth=depth, num_heads=heads)
    kwargs.update(overrides)
    return RepaSiT(**kwargs)
