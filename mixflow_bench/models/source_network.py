"""Source networks of the κ-FC mixed-source method: κ -> (mean, log variance) of a diagonal Gaussian source.

The signal κ is one of

* ``image``: the data sample x1 itself (a learned forward coupling q(x0 | x1); every released model uses it),
* ``class``: the label, embedded as a full-size input map (the released ``class_encoder``),
* ``noise``: a fresh N(0, I) draw (a learned map of noise).

:class:`SourceUNet` is the released image source network: diffusers U-Net blocks without a time embedding
(block widths 32, 64, 64, 64; three ``DownBlock2D`` then ``AttnDownBlock2D``, mirrored; two layers per block;
attention heads of 8 channels; GroupNorm 32; SiLU; no mid block, as the released configuration leaves its
``mid_block_type`` at None), whose ``2C`` output channels are
split into mean and log variance. Parameter names follow the released checkpoints (``noise_predictor.network.*``
without that prefix). :class:`SourceMLP` is the small one of the CPU reproduction.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from mixflow_bench.flow.mixed_source import check_kappa


def _split(output: Tensor) -> tuple[Tensor, Tensor]:
    mean, log_var = output.chunk(2, dim=1)
    return mean, log_var


class SourceMLP(nn.Module):
    """``forward(x1, y, noise) -> (mean, log_var)`` for vector data of shape ``data_shape``."""

    def __init__(
        self, data_shape: tuple[int, ...], kappa: str = "image", num_classes: int = 1, hidden: int = 128, depth: int = 2
    ):
        super().__init__()
        self.kappa = check_kappa(kappa)
        self.data_shape = tuple(data_shape)
        dim = math.prod(self.data_shape)
        self.input = nn.Embedding(num_classes + 1, hidden) if kappa == "class" else nn.Linear(dim, hidden)
        layers: list[nn.Module] = []
        for _ in range(depth):
            layers += [nn.SiLU(), nn.Linear(hidden, hidden)]
        self.body = nn.Sequential(*layers)
        self.output = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 2 * dim))
        nn.init.zeros_(self.output[1].weight)  # start at N(0, I): mean 0, log variance 0
        nn.init.zeros_(self.output[1].bias)

    def forward(self, x1: Tensor, y: Tensor | None = None, noise: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if self.kappa == "image":
            h = self.input(x1.flatten(1))
        elif self.kappa == "noise":
            h = self.input((noise if noise is not None else torch.randn_like(x1)).flatten(1))
        else:
            h = self.input(y if y is not None else torch.zeros(len(x1), dtype=torch.long, device=x1.device))
        out = self.output(self.body(h))
        mean, log_var = out.chunk(2, dim=1)
        return mean.reshape(x1.shape), log_var.reshape(x1.shape)


class SourceUNet(nn.Module):
    """The released image source network; ``forward(x1, y, noise) -> (mean, log_var)``, each (B, C, H, W)."""

    def __init__(
        self,
        resolution: int = 32,
        channels: int = 3,
        kappa: str = "image",
        num_classes: int | None = None,
        block_out_channels: tuple[int, ...] = (32, 64, 64, 64),
        down_block_types: tuple[str, ...] = ("DownBlock2D", "DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
        up_block_types: tuple[str, ...] = ("AttnUpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D"),
        layers_per_block: int = 2,
        attention_head_dim: int = 8,
        norm_num_groups: int = 32,
        norm_eps: float = 1e-5,
        mid_block: bool = False,
    ):
        from diffusers.models.unets.unet_2d_blocks import UNetMidBlock2D, get_down_block, get_up_block

        super().__init__()
        self.kappa = check_kappa(kappa)
        self.resolution, self.channels = resolution, channels
        if kappa == "class":
            if not num_classes:
                raise ValueError("kappa 'class' needs num_classes")
            self.class_embedding = nn.Embedding(num_classes, channels * resolution * resolution)
        widths = tuple(block_out_channels)
        common = dict(resnet_eps=norm_eps, resnet_act_fn="silu", resnet_groups=norm_num_groups, temb_channels=None,
                      attention_head_dim=attention_head_dim, resnet_time_scale_shift="default", dropout=0.0)
        self.conv_in = nn.Conv2d(channels, widths[0], kernel_size=3, padding=1)
        self.down_blocks = nn.ModuleList()
        width = widths[0]
        for i, kind in enumerate(down_block_types):
            prev, width = width, widths[i]
            self.down_blocks.append(get_down_block(
                kind, num_layers=layers_per_block, in_channels=prev, out_channels=width,
                add_downsample=i < len(widths) - 1, downsample_padding=1, downsample_type="conv", **common,
            ))
        self.mid_block = None if not mid_block else UNetMidBlock2D(
            in_channels=widths[-1], temb_channels=None, dropout=0.0, num_layers=0, resnet_eps=norm_eps,
            resnet_act_fn="silu", output_scale_factor=1.0, resnet_time_scale_shift="default",
            attention_head_dim=attention_head_dim, resnet_groups=norm_num_groups, attn_groups=None,
            add_attention=True,
        )
        rev = list(reversed(widths))
        self.up_blocks = nn.ModuleList()
        width = rev[0]
        for i, kind in enumerate(up_block_types):
            prev, width = width, rev[i]
            skip_in = rev[min(i + 1, len(widths) - 1)]
            self.up_blocks.append(get_up_block(
                kind, num_layers=layers_per_block + 1, in_channels=skip_in, out_channels=width,
                prev_output_channel=prev, add_upsample=i < len(widths) - 1, upsample_type="conv", **common,
            ))
        self.conv_norm_out = nn.GroupNorm(norm_num_groups, widths[0], eps=norm_eps)
        self.conv_act = nn.SiLU()
        self.conv_out = nn.Conv2d(widths[0], 2 * channels, kernel_size=3, padding=1)

    def _input(self, x1: Tensor, y: Tensor | None, noise: Tensor | None) -> Tensor:
        if self.kappa == "image":
            return x1
        if self.kappa == "noise":
            return noise if noise is not None else torch.randn_like(x1)
        if y is None:
            raise ValueError("kappa 'class' needs labels")
        return self.class_embedding(y).reshape(x1.shape[0], self.channels, x1.shape[2], x1.shape[3])

    def forward(self, x1: Tensor, y: Tensor | None = None, noise: Tensor | None = None) -> tuple[Tensor, Tensor]:
        h = self.conv_in(self._input(x1, y, noise))
        skips: tuple[Tensor, ...] = (h,)
        for block in self.down_blocks:
            h, res = block(hidden_states=h)
            skips += res
        if self.mid_block is not None:
            h = self.mid_block(h, temb=None)
        for block in self.up_blocks:
            n = len(block.resnets)
            h, skips = block(h, skips[-n:]), skips[:-n]
        return _split(self.conv_out(self.conv_act(self.conv_norm_out(h))))
