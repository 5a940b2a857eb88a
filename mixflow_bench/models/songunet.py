"""EDM's SongUNet in its DDPM++ configuration: the velocity network of the released κ-FC mixed-source models.

Parameter names equal the released Lightning checkpoints (``denoiser.*`` / ``ema.module.*`` without the prefix):
``map_layer0``/``map_layer1`` (the time embedding MLP), ``enc.<res>x<res>_conv`` / ``_down`` / ``_block<i>`` and
``dec.<res>x<res>_in0`` / ``_in1`` / ``_up`` / ``_block<i>`` / ``_aux_norm`` / ``_aux_conv``, each block with
``norm0, conv0, affine, norm1, conv1[, skip][, norm2, qkv, proj]``; resampling convolutions hold their 2x2 box
filter as the buffer ``resample_filter``. Only the DDPM++ settings the released configs use are built: standard
encoder and decoder, positional time embedding with ``endpoint=True``, box resampling filter ``[1, 1]``, one
attention head, no class or augmentation labels.

The network takes time ``t`` in ``DATA_AT_1`` (t = 0 noise, t = 1 data) *unscaled* (the released models embed
``t`` in [0, 1] directly) and returns the velocity ``dx/dt = x1 - x0``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mixflow_bench.flow.conventions import TimeConvention


@dataclass(frozen=True)
class SongUNetConfig:
    """The architecture settings of one released model (the rest are the fixed DDPM++ choices above)."""

    resolution: int = 32
    in_channels: int = 3
    out_channels: int = 3
    model_channels: int = 128
    channel_mult: tuple[int, ...] = (2, 2, 2)
    channel_mult_emb: int = 4
    num_blocks: int = 4
    attn_resolutions: tuple[int, ...] = (16,)
    dropout: float = 0.13


CIFAR10 = SongUNetConfig(32, channel_mult=(2, 2, 2), dropout=0.13)
FFHQ64 = SongUNetConfig(64, channel_mult=(1, 2, 2, 2), dropout=0.05)
AFHQV2_64 = SongUNetConfig(64, channel_mult=(1, 2, 2, 2), dropout=0.25)


def positional_embedding(t: Tensor, channels: int, max_positions: float = 10_000.0) -> Tensor:
    """EDM's positional embedding with ``endpoint=True``, sin/cos order swapped as SongUNet does: ``[sin, cos]``."""
    half = channels // 2
    freqs = (1.0 / max_positions) ** (torch.arange(half, dtype=torch.float32, device=t.device) / (half - 1))
    args = torch.outer(t.to(torch.float32), freqs)
    return torch.cat([args.sin(), args.cos()], dim=1)


class Linear(nn.Module):
    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features))
        nn.init.xavier_uniform_(self.weight)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight.to(x.dtype), self.bias.to(x.dtype))


class Conv2d(nn.Module):
    """A convolution (``kernel`` 0: none) with an optional 2x box up- or down-sampling applied first."""

    def __init__(self, cin: int, cout: int, kernel: int, up: bool = False, down: bool = False, zero: bool = False):
        super().__init__()
        self.in_channels, self.out_channels, self.up, self.down = cin, cout, up, down
        if kernel:
            self.weight = nn.Parameter(torch.empty(cout, cin, kernel, kernel))
            self.bias = nn.Parameter(torch.zeros(cout))
            nn.init.xavier_uniform_(self.weight, gain=1e-5 if zero else 1.0)
        else:
            self.weight, self.bias = None, None
        self.register_buffer("resample_filter", torch.full((1, 1, 2, 2), 0.25) if up or down else None)

    def forward(self, x: Tensor) -> Tensor:
        if self.up:  # nearest-neighbour 2x (the transposed box filter of EDM, times 4)
            f = self.resample_filter.to(x.dtype).mul(4).tile([self.in_channels, 1, 1, 1])
            x = F.conv_transpose2d(x, f, groups=self.in_channels, stride=2)
        if self.down:  # 2x2 average pooling
            f = self.resample_filter.to(x.dtype).tile([self.in_channels, 1, 1, 1])
            x = F.conv2d(x, f, groups=self.in_channels, stride=2)
        if self.weight is not None:
            x = F.conv2d(x, self.weight.to(x.dtype), self.bias.to(x.dtype), padding=self.weight.shape[-1] // 2)
        return x


class GroupNorm(nn.Module):
    def __init__(self, channels: int, groups: int = 32, eps: float = 1e-6) -> None:
        super().__init__()
        self.groups, self.eps = min(groups, channels // 4), eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        return F.group_norm(x, self.groups, self.weight.to(x.dtype), self.bias.to(x.dtype), self.eps)


class Block(nn.Module):
    """A DDPM++ residual block (additive embedding, skip scale 1/sqrt(2)) with optional one-head attention."""

    def __init__(self, cin: int, cout: int, emb: int, *, up: bool = False, down: bool = False,
                 attention: bool = False, dropout: float = 0.0, attn_kernel: str = "sdpa") -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.dropout, self.attention = cin, cout, dropout, attention
        self.attn_kernel = attn_kernel
        self.norm0 = GroupNorm(cin)
        self.conv0 = Conv2d(cin, cout, 3, up=up, down=down)
        self.affine = Linear(emb, cout)
        self.norm1 = GroupNorm(cout)
        self.conv1 = Conv2d(cout, cout, 3, zero=True)
        self.skip = Conv2d(cin, cout, 1, up=up, down=down) if (cin != cout or up or down) else None
        if attention:
            self.norm2 = GroupNorm(cout)
            self.qkv = Conv2d(cout, 3 * cout, 1)
            self.proj = Conv2d(cout, cout, 1, zero=True)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv0(F.silu(self.norm0(x)))
        h = F.silu(self.norm1(h + self.affine(emb)[:, :, None, None].to(h.dtype)))
        h = self.conv1(F.dropout(h, p=self.dropout, training=self.training))
        x = (h + (self.skip(x) if self.skip is not None else x)) * math.sqrt(0.5)
        if not self.attention:
            return x
        b, c, hh, ww = x.shape
        q, k, v = self.qkv(self.norm2(x)).reshape(b, c, 3, hh * ww).unbind(2)  # each (B, C, HW)
        if self.attn_kernel == "math":
            w = torch.einsum("ncq,nck->nqk", q.float(), k.float() / math.sqrt(c)).softmax(dim=2).to(q.dtype)
            a = torch.einsum("nqk,nck->ncq", w, v)
        else:
            a = F.scaled_dot_product_attention(q.transpose(1, 2)[:, None], k.transpose(1, 2)[:, None],
                                               v.transpose(1, 2)[:, None])[:, 0].transpose(1, 2)
        return (self.proj(a.reshape(b, c, hh, ww)) + x) * math.sqrt(0.5)


class SongUNet(nn.Module):
    """``forward(x, t, y=None) -> dx/dt`` for images (B, C, H, W) in [-1, 1]; ``t`` (B,) in DATA_AT_1, unscaled."""

    convention = TimeConvention.DATA_AT_1
    num_classes = 0

    def __init__(self, config: SongUNetConfig = CIFAR10, attention: str = "sdpa") -> None:
        super().__init__()
        if attention not in ("sdpa", "math"):
            raise ValueError(f"attention must be 'sdpa' or 'math', got {attention!r}")
        self.config = config
        mc = config.model_channels
        emb = mc * config.channel_mult_emb
        self.noise_channels = mc
        self.map_layer0 = Linear(mc, emb)
        self.map_layer1 = Linear(emb, emb)
        kw = dict(emb=emb, dropout=config.dropout, attn_kernel=attention)
        self.enc = nn.ModuleDict()
        cout = config.in_channels
        for level, mult in enumerate(config.channel_mult):
            res = config.resolution >> level
            if level == 0:
                self.enc[f"{res}x{res}_conv"] = Conv2d(cout, mc, 3)
                cout = mc
            else:
                self.enc[f"{res}x{res}_down"] = Block(cout, cout, down=True, **kw)
            for i in range(config.num_blocks):
                cin, cout = cout, mc * mult
                self.enc[f"{res}x{res}_block{i}"] = Block(cin, cout, attention=res in config.attn_resolutions, **kw)
        skips = [m.out_channels for m in self.enc.values()]
        self.dec = nn.ModuleDict()
        last = len(config.channel_mult) - 1
        for level, mult in reversed(list(enumerate(config.channel_mult))):
            res = config.resolution >> level
            if level == last:
                self.dec[f"{res}x{res}_in0"] = Block(cout, cout, attention=True, **kw)
                self.dec[f"{res}x{res}_in1"] = Block(cout, cout, **kw)
            else:
                self.dec[f"{res}x{res}_up"] = Block(cout, cout, up=True, **kw)
            for i in range(config.num_blocks + 1):
                cin, cout = cout + skips.pop(), mc * mult
                attn = i == config.num_blocks and res in config.attn_resolutions
                self.dec[f"{res}x{res}_block{i}"] = Block(cin, cout, attention=attn, **kw)
            if level == 0:
                self.dec[f"{res}x{res}_aux_norm"] = GroupNorm(cout)
                self.dec[f"{res}x{res}_aux_conv"] = Conv2d(cout, config.out_channels, 3, zero=True)

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        t = torch.as_tensor(t, device=x.device)
        t = t.expand(x.shape[0]) if t.ndim == 0 else t
        emb = positional_embedding(t, self.noise_channels)
        emb = F.silu(self.map_layer1(F.silu(self.map_layer0(emb.to(x.dtype)))))
        skips: list[Tensor] = []
        for block in self.enc.values():
            x = block(x, emb) if isinstance(block, Block) else block(x)
            skips.append(x)
        out = None
        for name, block in self.dec.items():
            if name.endswith("_aux_norm"):
                h = block(x)
            elif name.endswith("_aux_conv"):
                out = block(F.silu(h))
            else:
                if x.shape[1] != block.in_channels:
                    x = torch.cat([x, skips.pop()], dim=1)
                x = block(x, emb)
        return out


def songunet(config: SongUNetConfig | str = CIFAR10, attention: str = "sdpa", **overrides) -> SongUNet:
    """Build the SongUNet of a released configuration (``cifar10``, ``ffhq-64``, ``afhqv2-64``) or a config;
    ``overrides`` replace fields of the configuration (``model_channels``, ``num_blocks``, ...)."""
    if isinstance(config, str):
        table = {"cifar10": CIFAR10, "ffhq-64": FFHQ64, "afhqv2-64": AFHQV2_64}
        if config not in table:
            raise ValueError(f"unknown SongUNet configuration {config!r} (expected one of: {', '.join(table)})")
        config = table[config]
    for key in ("channel_mult", "attn_resolutions"):  # lists from a recipe or the command line
        if key in overrides:
            overrides[key] = tuple(overrides[key])
    return SongUNet(dataclasses.replace(config, **overrides), attention)


# --- the released Lightning checkpoints -----------------------------------------------------------------------
class CheckpointMismatch(ValueError):
    """A checkpoint that does not belong to the model it is loaded into (one line for the CLI)."""


# The κ-FC mixed-source Lightning checkpoints (NazirNayal8/MixFlow, ``src/model/wrapper.py``): the LightningModule
# holds the velocity network ``denoiser``, its EMA ``ema`` (a ``torch.optim.swa_utils.AveragedModel``: ``module.*``
# plus the ``n_averaged`` counter) and the source network ``noise_predictor``; its sampler integrates with ``ema``
# whenever the run kept one (``train.use_ema``, true in every released configuration).
LIGHTNING_VELOCITY = ("ema.module.", "denoiser.")  # in order of preference: the EMA copy the sampler uses
LIGHTNING_OTHER = ("noise_predictor.", "ema.n_averaged")  # kept in the file, not used for sampling


def lightning_weights(obj: object, *, which: str = "ema", source: str = "checkpoint") -> dict[str, Tensor]:
    """The velocity network's state dict (prefix removed) from anything the κ-FC code writes or releases.

    Accepted: a Lightning ``.ckpt`` (a dict whose ``state_dict`` holds the module's tensors, beside Lightning's
    own entries: epoch, loops, optimizer states, ...), that ``{"state_dict": ...}`` alone, the module's flat
    prefixed state dict, or an un-prefixed velocity state dict (already extracted). ``which="ema"`` takes
    ``ema.module.*`` (``denoiser.*`` when the run kept no EMA); ``which="denoiser"`` the raw weights. Any tensor
    outside the module's known prefixes is an :class:`CheckpointMismatch` naming it.
    """
    if which not in ("ema", "denoiser"):
        raise ValueError(f"which must be 'ema' or 'denoiser', got {which!r}")
    state = obj.get("state_dict") if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict) else obj
    if not isinstance(state, dict):
        raise CheckpointMismatch(f"{source} holds a {type(state).__name__}, not a Lightning checkpoint or state dict")
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointMismatch(f"{source}: entries {bad[:5]} of its state dict are not tensors")
    known = LIGHTNING_VELOCITY + LIGHTNING_OTHER
    if not any(str(k).startswith(known) for k in state):  # an extracted velocity state dict
        return {str(k): v for k, v in state.items()}
    unknown = sorted(str(k) for k in state if not str(k).startswith(known))
    if unknown:
        raise CheckpointMismatch(
            f"{source} is not a κ-FC mixed-source checkpoint: keys {unknown[:5]} are outside "
            f"{', '.join(p.rstrip('.') for p in known)}"
        )
    prefixes = LIGHTNING_VELOCITY if which == "ema" else LIGHTNING_VELOCITY[1:]
    for prefix in prefixes:
        velocity = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if velocity:
            return velocity
    raise CheckpointMismatch(f"{source} holds no velocity network ({' or '.join(p + '*' for p in prefixes)})")


def checkpoint_resolution(state: dict[str, Tensor]) -> int | None:
    """The image resolution a SongUNet state dict was built for, read off its ``enc.<r>x<r>_conv`` key."""
    for key in state:
        parts = key.split(".")
        if len(parts) >= 2 and parts[0] == "enc" and parts[1].endswith("_conv"):
            return int(parts[1].split("x")[0])
    return None


def load_velocity_state(model: SongUNet, state: dict[str, Tensor], *, which: str = "ema", source: str = "") -> None:
    """Load a released checkpoint's velocity weights strictly (any layout :func:`lightning_weights` reads); a clear
    error for another resolution or layout."""
    velocity = lightning_weights(state, which=which, source=source or "checkpoint")
    found, want = checkpoint_resolution(velocity), model.config.resolution
    if found is not None and found != want:
        raise CheckpointMismatch(
            f"{source or 'checkpoint'} is a {found}x{found} model; this network is {want}x{want}"
        )
    try:
        model.load_state_dict(velocity, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise CheckpointMismatch(f"{source or 'checkpoint'} does not fit SongUNet({want}x{want}): {first}") from exc


def load_released_checkpoint(model: SongUNet, path, *, which: str = "ema") -> None:
    """Read a released Lightning checkpoint (or its stripped / flat forms) and load its EMA velocity weights into
    ``model`` strictly; ``which="denoiser"`` takes the raw weights."""
    state = torch.load(Path(path), map_location="cpu", weights_only=True)  # tensors and plain values only, no code
    load_velocity_state(model, state, which=which, source=str(path))
