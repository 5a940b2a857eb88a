"""What every generator in the zoo declares, so one sampler from ``mixflow_bench.flow`` drives all of them.

A flow model is an ``nn.Module`` called as ``model(x, t, y)`` that returns the velocity ``dx/dt`` in its own
time convention. The :class:`ModelSpec` beside it says which convention that is, the latent shape, how latents
become pixels, and the sampling defaults of the paper the model comes from.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from torch import Tensor, nn

from mixflow_bench.flow.conventions import TimeConvention


@runtime_checkable
class FlowModel(Protocol):
    """A class-conditional velocity network: ``forward(x, t, y) -> dx/dt`` in ``convention``."""

    convention: TimeConvention
    num_classes: int

    def __call__(self, x: Tensor, t: Tensor, y: Tensor) -> Tensor: ...


@dataclass(frozen=True)
class ModelSpec:
    """Static facts about one generator of the zoo, its own sampling rules included.

    ``build(**overrides)`` returns the randomly initialised ``nn.Module`` whose state-dict names equal the
    official checkpoint's; ``checkpoint`` names the hub artifact holding its weights (None for toy models).
    ``decoder`` names the latent decoder (``"sd-vae-ft-ema"``, ``"rae-vitxl-256"``, ``None`` for pixel space).

    Sampling rules (what the paper's official sampler fixes; recipes and ``sample --model`` start from them):
    ``sampler_defaults`` is the ``sample:`` mapping (sampler, steps, quantisation, labels, precision, ...; a
    ``guidance`` entry is the guidance it samples with by default); ``guidance_kind`` is what a guidance scale
    turns on (None: the model takes no guidance), ``guidance_scale`` the paper's headline scale of that kind, and
    ``guidance_rules`` the settings that hold whenever it guides (SiT's 3 channels, REPA's interval, RAE's guide
    model). ``output`` is what the network returns: ``velocity`` or ``gm`` (a Gaussian mixture, GMFlow); the
    sampler registry (:mod:`mixflow_bench.samplers`) matches it and ``convention`` to the samplers it can use.
    """

    name: str
    build: Callable[..., nn.Module]
    convention: TimeConvention
    latent_shape: tuple[int, ...]
    num_classes: int
    checkpoint: str | None = None
    decoder: str | None = None
    resolution: int | None = None
    sampler_defaults: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    family: str | None = None  # the paper it comes from: sit | repa | rae | gmflow | mixed-source | toy
    method: str = "fm"  # the method (mixflow_bench.methods) its released weights were trained with
    load_weights: Callable[[nn.Module, Any], None] | None = None  # own checkpoint reader (default: a state dict)
    guidance_kind: str | None = "cfg"
    guidance_scale: float | None = None
    guidance_rules: dict[str, Any] = field(default_factory=dict)
    output: Literal["velocity", "gm"] = "velocity"
