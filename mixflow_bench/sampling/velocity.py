"""Recipe sampling settings -> the core samplers and guidance of ``mixflow_bench.flow``, and latents -> images.

``build_velocity`` wraps a model (and guide) into the guided velocity of the recipe; ``integrate`` runs the
recipe's sampler from start noise to latents; ``model_generator`` adds decoding and precision and returns the
:class:`~mixflow_bench.sampling.shards.Generator` that ``sample_to_npz`` drives.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn

from mixflow_bench.flow import (
    Path as FlowPath,
)
from mixflow_bench.flow import (
    TimeConvention,
    autoguidance,
    classifier_free,
    conditional,
    dopri5,
    euler,
    euler_maruyama,
    heun,
    rae_grid,
    rae_shift_factor,
    repa_heun,
    uniform_grid,
)
from mixflow_bench.recipes.schema import SampleSection
from mixflow_bench.sampling.fast import FastPath, prefetch_to, prepare_model
from mixflow_bench.sampling.shards import Generator

VelocityFn = Callable[[Tensor, Tensor], Tensor]


def resolve_shift(shift: float | str | None, latent_shape: tuple[int, ...]) -> float:
    """A recipe's ``time_shift``: ``"auto"`` is RAE's ``sqrt(C*H*W/4096)``; None is no shift (1)."""
    if shift is None:
        return 1.0
    if shift == "auto":
        if len(latent_shape) != 3:
            raise ValueError(f"time_shift 'auto' needs a (C, H, W) latent shape, got {latent_shape}")
        return rae_shift_factor(*latent_shape)
    return float(shift)


def build_velocity(spec: Any, model: nn.Module, y: Tensor, sample_cfg: SampleSection, guide_model=None) -> VelocityFn:
    """The velocity ``(x, t) -> dx/dt`` (model's convention) for labels ``y`` with the recipe's guidance."""
    g = sample_cfg.guidance
    interval = tuple(g.interval) if g.interval is not None else None
    if g.kind == "none" or (g.kind == "cfg" and g.scale == 1.0):
        return conditional(model, y)
    if g.kind == "cfg":
        return classifier_free(
            model, y, g.scale, null_label=spec.num_classes, channels=g.channels, interval=interval
        )
    if g.kind == "autoguidance":
        if guide_model is None:
            raise ValueError("autoguidance needs a guide model (sample.guidance.guide_model)")
        return autoguidance(model, guide_model, y, g.scale, interval=interval)
    raise ValueError(f"unknown guidance kind {g.kind!r}")


def integrate(
    spec: Any,
    velocity: VelocityFn,
    noise: Tensor,
    sample_cfg: SampleSection,
    step_noise: Callable[[int], Tensor] | None = None,
) -> Tensor:
    """Run the recipe's sampler from ``noise`` to latents at the data end of the model's convention.

    ``sde``: SiT's Euler-Maruyama (``steps`` NFE, last drift-only step); ``euler``: uniform grid of ``steps``
    steps; ``heun``: the Heun of the model's family, ``steps`` steps (REPA: :func:`repa_heun` on the uniform
    grid; RAE: torchdiffeq-style Heun on its shifted grid of ``steps + 1`` points; SiT and models without a
    family: torchdiffeq-style Heun on the uniform grid); ``dopri5``: adaptive; ``rae-euler``: Euler on RAE's
    shifted ``steps``-point grid.
    """
    conv = TimeConvention(spec.convention)
    path_kind = (getattr(spec, "sampler_defaults", None) or {}).get("path", "linear")
    kind = sample_cfg.sampler
    if kind == "sde":
        path = FlowPath(kind=path_kind, convention=conv)
        return euler_maruyama(
            velocity, noise, path, steps=sample_cfg.steps, last_step_size=sample_cfg.last_step_size, noise=step_noise
        )
    if kind == "euler":
        return euler(velocity, noise, uniform_grid(sample_cfg.steps, conv))
    if kind == "heun":
        family = getattr(spec, "family", None)
        if family == "repa":
            return repa_heun(velocity, noise, uniform_grid(sample_cfg.steps, conv))
        if family == "rae":
            shift = resolve_shift(sample_cfg.time_shift, tuple(spec.latent_shape))
            return heun(velocity, noise, rae_grid(sample_cfg.steps + 1, shift))
        return heun(velocity, noise, uniform_grid(sample_cfg.steps, conv))
    if kind == "dopri5":
        return dopri5(velocity, noise, conv.noise_time, conv.data_time).sample
    if kind in ("manual-heun", "rk45"):  # the κ-FC mixed-source paper's solvers (NFE 2N - 1; adaptive, 1e-5)
        from mixflow_bench.flow import counted_solvers

        if kind == "rk45":
            return counted_solvers.rk45(velocity, noise, conv.noise_time, conv.data_time).sample
        if conv is not TimeConvention.DATA_AT_1:
            raise ValueError(f"manual-heun runs in DATA_AT_1 time; model {spec.name} uses {conv.value}")
        return counted_solvers.manual_heun(velocity, noise, sample_cfg.steps).sample
    if kind == "rae-euler":
        if conv is not TimeConvention.DATA_AT_0:
            raise ValueError(f"rae-euler runs in DATA_AT_0 time; model {spec.name} uses {conv.value}")
        shift = resolve_shift(sample_cfg.time_shift, tuple(spec.latent_shape))
        return euler(velocity, noise, rae_grid(sample_cfg.steps, shift))
    raise ValueError(f"unknown sampler {kind!r} (expected sde, euler, heun, dopri5 or rae-euler)")


@contextlib.contextmanager
def precision_context(precision: str, device: torch.device) -> Iterator[None]:
    """fp32 (TF32 off), tf32 (TF32 matmuls on CUDA), bf16 (autocast) or fp8 for the model calls inside.

    fp8 is bf16 autocast here: the FP8 matmuls live in the model's converted linears (``prepare_model``).
    """
    if precision not in ("fp32", "tf32", "bf16", "fp8"):
        raise ValueError(f"unknown precision {precision!r} (expected fp32, tf32, bf16 or fp8)")
    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
    torch.backends.cudnn.allow_tf32 = precision == "tf32"
    try:
        if precision in ("bf16", "fp8"):
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
                yield
        else:
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def fast_path_of(sample_cfg: SampleSection) -> FastPath:
    """The fast-path switches a recipe's ``sample:`` section sets (its defaults are the exact path)."""
    mode = "reduce-overhead" if sample_cfg.cuda_graphs else "default"
    return FastPath(
        precision=sample_cfg.precision, attention=sample_cfg.attention, compile=sample_cfg.compile, compile_mode=mode
    )


def pixel_decode(x: Tensor) -> Tensor:
    """Decode for pixel-space toy models: data in [-1, 1] of shape (B, H, W) or (B, D) -> gray (B, 3, H, W)."""
    if x.ndim == 2:
        x = x[:, None, :]
    if x.ndim == 3:
        x = x[:, None]
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    return ((x.float() + 1.0) / 2.0).clamp(0, 1)


def _fp32(fn: Callable[..., Tensor]) -> Callable[..., Tensor]:
    return lambda *args: fn(*args).float()


def model_generator(
    spec: Any,
    model: nn.Module,
    sample_cfg: SampleSection,
    *,
    codec: Any = None,
    guide_model: nn.Module | None = None,
    device: torch.device | str = "cpu",
    fingerprint_extra: dict[str, Any] | None = None,
) -> Generator:
    """A :class:`Generator` sampling ``model`` with the recipe's sampler, guidance, precision and decoder."""
    device = torch.device(device)
    fast = fast_path_of(sample_cfg)
    model = prepare_model(model.to(device), fast)
    if guide_model is not None:
        guide_model = prepare_model(guide_model.to(device), fast)
    decoder = getattr(codec, "decoder", None)
    if hasattr(decoder, "set_attention"):  # RAE's ViT decoder: the same attention switch as the model
        decoder.set_attention(fast.attention)
    decode = pixel_decode if codec is None else codec.decode

    def generate(noise: Tensor, y: Tensor, step_noise: Callable[[int], Tensor]) -> Tensor:
        noise, y = noise.to(device), y.to(device)
        with torch.no_grad(), precision_context(sample_cfg.precision, device):
            if sample_cfg.sampler.startswith("gm-"):  # GMFlow: the model outputs a Gaussian mixture
                from mixflow_bench.sampling.gm import integrate_gm

                latents = integrate_gm(spec, model, y, noise, sample_cfg, prefetch_to(device, step_noise))
                return decode(latents.float()).float()
            main = _fp32(model)
            guide = _fp32(guide_model) if guide_model is not None else None
            velocity = build_velocity(spec, main, y, sample_cfg, guide)
            latents = integrate(spec, velocity, noise, sample_cfg, step_noise=prefetch_to(device, step_noise))
            images = decode(latents.float())
        return images.float()  # stays on the device: sample_to_npz copies it back asynchronously

    return Generator(
        generate=generate,
        latent_shape=tuple(spec.latent_shape),
        num_classes=spec.num_classes,
        quantize=sample_cfg.quantize,
        fingerprint=sample_fingerprint(spec.name, sample_cfg, fingerprint_extra),
    )


def sample_fingerprint(model_name: str, sample_cfg: SampleSection, extra: dict[str, Any] | None = None) -> str:
    """The shard fingerprint of sampling ``model_name`` with ``sample_cfg``: every setting that changes a sample
    (precision, attention and compile included), not the run's size (``num``, ``batch_size``, ``shard_size``)."""
    settings = {
        "model": model_name,
        "sample": {k: v for k, v in _asdict(sample_cfg).items() if k not in ("num", "batch_size", "shard_size")},
        **(extra or {}),
    }
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _asdict(obj: Any) -> dict[str, Any]:
    import dataclasses

    return dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else dict(obj)
