"""RAE stage 1: frozen DINOv2-B (with registers) encoder, ViT-XL pixel decoder, and latent normalisation.

* Encoder: ``transformers.Dinov2WithRegistersModel``, loaded with transformers' own ``from_pretrained`` (any
  hub naming) or, without weights, built from a local config equal to ``facebook/dinov2-with-registers-base``.
  Its final LayerNorm keeps normalising but loses its affine weight and bias; CLS and the 4 register tokens are
  dropped, leaving (768, 16, 16) features for a 224 px input (256 px images) or (768, 32, 32) for 448 px (512 px
  images). Pixels in [0, 1] are resized
  bicubically and standardised with the ImageNet mean/std.
* Decoder: :class:`GeneralDecoder`, a ViT-MAE-style decoder whose parameter names equal RAE's
  ``decoder.GeneralDecoder`` (so the released ``model.pt`` loads strictly). It is written here with exact
  (erf) GELU and written-out softmax attention, matching the original numerics.
* :class:`LatentStats`: ``z = (z - mean) / sqrt(var + 1e-5)`` from RAE's ``stat.pt`` (``mean`` may be None).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mixflow_bench.models.hf_loading import check_loading_info, hf_weights_folder
from mixflow_bench.models.layers import attend, check_attention, sincos_2d

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
NUM_DROPPED_TOKENS = 5  # CLS + 4 registers
STAT_EPS = 1e-5


# transformers 5 names of DINOv2's attention projections -> the 4.x names (what the 4.x classes expect)
_DINOV2_5X_TO_4X = {
    r"attention\.q_proj\.": "attention.attention.query.",
    r"attention\.k_proj\.": "attention.attention.key.",
    r"attention\.v_proj\.": "attention.attention.value.",
    r"attention\.o_proj\.": "attention.output.dense.",
}


def dinov2_key_mapping() -> dict[str, str] | None:
    """A ``from_pretrained`` key mapping for files in the other transformers generation's DINOv2 names.

    transformers 5 renames 4.x files itself (its conversion mapping); a 4.x install gets the regex mapping from
    5.x names back to its own. None when the installed version needs no help.
    """
    from transformers.models.dinov2_with_registers import modeling_dinov2_with_registers as modeling

    uses_5x_names = "q_proj" in inspect.getsource(modeling.Dinov2WithRegistersAttention.__init__)
    return None if uses_5x_names else dict(_DINOV2_5X_TO_4X)


def dinov2_reg_base_config():
    """The ``Dinov2WithRegistersConfig`` of ``facebook/dinov2-with-registers-base``, built locally."""
    from transformers import Dinov2WithRegistersConfig

    return Dinov2WithRegistersConfig(
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        mlp_ratio=4,
        hidden_act="gelu",
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        initializer_range=0.02,
        layer_norm_eps=1e-6,
        image_size=518,
        patch_size=14,
        num_channels=3,
        qkv_bias=True,
        layerscale_value=1.0,
        drop_path_rate=0.0,
        use_swiglu_ffn=False,
        num_register_tokens=4,
    )


class DinoV2Encoder(nn.Module):
    """DINOv2-B/14 with registers as RAE's feature encoder: images in [0, 1] -> (B, 768, g, g) features."""

    def __init__(self, input_size: int = 224, config=None, model: nn.Module | None = None) -> None:
        super().__init__()
        from transformers import Dinov2WithRegistersModel

        if model is not None:
            config = model.config
        self.config = config if config is not None else dinov2_reg_base_config()
        if input_size % self.config.patch_size:
            raise ValueError(f"encoder input {input_size} is not divisible by patch {self.config.patch_size}")
        self.input_size = input_size
        self.model = model if model is not None else Dinov2WithRegistersModel(self.config)
        self.model.requires_grad_(False)
        self.model.eval()
        self.drop_layernorm_affine()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    @classmethod
    def from_pretrained(cls, path: str | Path, input_size: int = 224, expect=None) -> DinoV2Encoder:
        """The encoder with weights from a ``Dinov2WithRegistersModel`` snapshot folder or weights file.

        Loads through transformers' ``from_pretrained``, which reads both the 4.x key names the hub serves
        (``attention.attention.query``) and the 5.x names (``attention.q_proj``), strictly: a missing, unused
        or mis-shaped tensor is an error. ``expect`` (a config) makes a differently shaped model an error too.
        A bare file without ``config.json`` gets :func:`dinov2_reg_base_config`.
        """
        from transformers import Dinov2WithRegistersModel

        path = Path(path)
        with hf_weights_folder(path, "model.safetensors", lambda d: dinov2_reg_base_config().save_pretrained(d)) as (
            folder,
            safetensors,
        ):
            model, info = Dinov2WithRegistersModel.from_pretrained(
                str(folder),
                use_safetensors=safetensors,
                local_files_only=True,
                output_loading_info=True,
                key_mapping=dinov2_key_mapping(),
            )
        check_loading_info(info, path, "DINOv2 (Dinov2WithRegistersModel)")
        if expect is not None:
            fields = ("hidden_size", "num_hidden_layers", "num_attention_heads", "patch_size", "num_register_tokens")
            wrong = {f: (getattr(model.config, f), getattr(expect, f)) for f in fields}
            wrong = {f: v for f, v in wrong.items() if v[0] != v[1]}
            if wrong:
                desc = ", ".join(f"{f} {got} (expected {want})" for f, (got, want) in wrong.items())
                raise ValueError(f"{path}: not the RAE encoder DINOv2-B/14 with registers: {desc}")
        return cls(input_size=input_size, model=model)

    @property
    def grid(self) -> int:
        return self.input_size // self.config.patch_size

    def drop_layernorm_affine(self) -> None:
        """Make the final LayerNorm a plain normalisation (RAE removes its learned weight and bias)."""
        ln = self.model.layernorm
        ln.elementwise_affine = False
        ln.weight = None
        ln.bias = None

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (B, 3, H, W) in [0, 1], got {tuple(images.shape)}")
        x = images.to(self.mean.dtype)
        if x.shape[-2:] != (self.input_size, self.input_size):
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bicubic", align_corners=False)
        x = (x - self.mean) / self.std
        tokens = self.model(pixel_values=x).last_hidden_state[:, NUM_DROPPED_TOKENS:]
        b, n, c = tokens.shape
        return tokens.transpose(1, 2).reshape(b, c, self.grid, self.grid)


@dataclass(frozen=True)
class DecoderConfig:
    """Shape of RAE's ViT-MAE-style pixel decoder (defaults: the released ViT-XL decoder)."""

    latent_dim: int = 768
    hidden_size: int = 1152
    num_layers: int = 28
    num_heads: int = 16
    intermediate_size: int = 4096
    patch_size: int = 16
    num_channels: int = 3
    layer_norm_eps: float = 1e-12


class _SelfAttention(nn.Module):
    def __init__(self, cfg: DecoderConfig, attention: str) -> None:
        super().__init__()
        self.num_heads = cfg.num_heads
        self.attention = attention
        self.query = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.key = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.value = nn.Linear(cfg.hidden_size, cfg.hidden_size)

    def forward(self, x: Tensor) -> Tensor:
        b, n, d = x.shape

        def split(t: Tensor) -> Tensor:
            return t.view(b, n, self.num_heads, d // self.num_heads).transpose(1, 2)

        out = attend(split(self.query(x)), split(self.key(x)), split(self.value(x)), self.attention)
        return out.transpose(1, 2).reshape(b, n, d)


class _Dense(nn.Module):
    def __init__(self, d_in: int, d_out: int) -> None:
        super().__init__()
        self.dense = nn.Linear(d_in, d_out)

    def forward(self, x: Tensor) -> Tensor:
        return self.dense(x)


class _AttentionBlock(nn.Module):
    def __init__(self, cfg: DecoderConfig, attention: str) -> None:
        super().__init__()
        self.attention = _SelfAttention(cfg, attention)
        self.output = _Dense(cfg.hidden_size, cfg.hidden_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.output(self.attention(x))


class DecoderLayer(nn.Module):
    """Pre-LN ViT layer with the ViT-MAE parameter names."""

    def __init__(self, cfg: DecoderConfig, attention: str = "math") -> None:
        super().__init__()
        self.attention = _AttentionBlock(cfg, attention)
        self.intermediate = _Dense(cfg.hidden_size, cfg.intermediate_size)
        self.output = _Dense(cfg.intermediate_size, cfg.hidden_size)
        self.layernorm_before = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.layernorm_after = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attention(self.layernorm_before(x))
        return x + self.output(F.gelu(self.intermediate(self.layernorm_after(x))))


class GeneralDecoder(nn.Module):
    """RAE's pixel decoder: (B, N, latent_dim) tokens -> images in encoder-standardised units."""

    def __init__(self, num_patches: int = 256, cfg: DecoderConfig | None = None, attention: str = "math") -> None:
        super().__init__()
        cfg = cfg or DecoderConfig()
        check_attention(attention)
        grid = int(round(num_patches**0.5))
        if grid * grid != num_patches:
            raise ValueError(f"num_patches must be a square, got {num_patches}")
        self.cfg = cfg
        self.num_patches = num_patches
        self.grid = grid
        self.decoder_embed = nn.Linear(cfg.latent_dim, cfg.hidden_size)
        table = sincos_2d(cfg.hidden_size, grid, cls_token=True).unsqueeze(0)
        self.decoder_pos_embed = nn.Parameter(table, requires_grad=False)
        self.decoder_layers = nn.ModuleList([DecoderLayer(cfg, attention) for _ in range(cfg.num_layers)])
        self.decoder_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.decoder_pred = nn.Linear(cfg.hidden_size, cfg.patch_size**2 * cfg.num_channels)
        self.trainable_cls_token = nn.Parameter(torch.zeros(1, 1, cfg.hidden_size))

    def set_attention(self, attention: str) -> None:
        """Switch every layer between ``"math"`` (the official eager softmax) and fused ``"sdpa"`` attention."""
        check_attention(attention)
        for layer in self.decoder_layers:
            layer.attention.attention.attention = attention

    def forward(self, tokens: Tensor) -> Tensor:
        """Patch predictions (B, N, p*p*3) for latent tokens (B, N, latent_dim); the CLS output is dropped."""
        if tokens.ndim != 3 or tokens.shape[1:] != (self.num_patches, self.cfg.latent_dim):
            raise ValueError(
                f"decoder expects (B, {self.num_patches}, {self.cfg.latent_dim}) tokens, got {tuple(tokens.shape)}"
            )
        x = self.decoder_embed(tokens)
        x = torch.cat([self.trainable_cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.decoder_pos_embed
        for layer in self.decoder_layers:
            x = layer(x)
        return self.decoder_pred(self.decoder_norm(x))[:, 1:]

    def unpatchify(self, patches: Tensor) -> Tensor:
        """(B, N, p*p*C) -> (B, C, g*p, g*p)."""
        b = patches.shape[0]
        p, c, g = self.cfg.patch_size, self.cfg.num_channels, self.grid
        x = patches.reshape(b, g, g, p, p, c)
        return torch.einsum("nhwpqc->nchpwq", x).reshape(b, c, g * p, g * p)

    def decode_features(self, features: Tensor) -> Tensor:
        """Un-normalised (B, latent_dim, g, g) features -> (B, 3, H, W) encoder-standardised images."""
        b, c, h, w = features.shape
        return self.unpatchify(self(features.reshape(b, c, h * w).transpose(1, 2)))


class LatentStats(nn.Module):
    """Per-element latent normalisation ``(z - mean) / sqrt(var + eps)`` from RAE's ``stat.pt``."""

    def __init__(self, var: Tensor, mean: Tensor | None = None, eps: float = STAT_EPS) -> None:
        super().__init__()
        self.eps = eps
        self.register_buffer("var", var.float().clone())
        self.register_buffer("mean", None if mean is None else mean.float().clone())

    @classmethod
    def load(cls, path: str | Path) -> LatentStats:
        """Read ``{"mean": Tensor | None, "var": Tensor}`` from a ``stat.pt`` file."""
        stats = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(stats, dict) or stats.get("var") is None:
            raise ValueError(f"{path}: expected a dict with a 'var' tensor (and optional 'mean'), got {type(stats)}")
        return cls(stats["var"], stats.get("mean"))

    def normalize(self, z: Tensor) -> Tensor:
        centred = z if self.mean is None else z - self.mean.to(z)
        return centred / torch.sqrt(self.var.to(z) + self.eps)

    def denormalize(self, z: Tensor) -> Tensor:
        scaled = z * torch.sqrt(self.var.to(z) + self.eps)
        return scaled if self.mean is None else scaled + self.mean.to(z)
