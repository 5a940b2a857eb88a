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

from mixflow_bench.flow import autoguidance, classifier_free, conditional
from mixflow_bench.recipes.schema import SampleSection
from mixflow_bench.samplers import Sampler, compatibility_problem, get_sampler
from mixflow_bench.sampling.fast import FastPath, prefetch_to, prepare_model
from mixflow_bench.sampling.shards import Generator

VelocityFn = Callable[[Tensor, Tensor], Tensor]


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


def sampler_for(spec: Any, sample_cfg: SampleSection) -> Sampler:
    """The registered sampler of ``sample_cfg``, checked against the model's output, time convention and the
    recipe's guidance kind (one clear ValueError otherwise)."""
    problem = compatibility_problem(sample_cfg.sampler, spec, sample_cfg.guidance.kind)
    if problem:
        raise ValueError(problem)
    return get_sampler(sample_cfg.sampler)


def integrate(
    spec: Any,
    velocity: VelocityFn,
    noise: Tensor,
    sample_cfg: SampleSection,
    step_noise: Callable[[int], Tensor] | None = None,
) -> Tensor:
    """Run the recipe's sampler (:mod:`mixflow_bench.samplers`) from ``noise`` to latents at the data end of the
    model's convention."""
    return sampler_for(spec, sample_cfg).function()(spec, velocity, noise, sample_cfg, step_noise)


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
            sampler = sampler_for(spec, sample_cfg)
            if sampler.output == "gm":  # GMFlow: guidance acts on the model's Gaussian mixtures
                latents = sampler.function()(spec, model, y, noise, sample_cfg, prefetch_to(device, step_noise))
                return decode(latents.float()).float()
            main = _fp32(model)
            guide = _fp32(guide_model) if guide_model is not None else None
            velocity = build_velocity(spec, main, y, sample_cfg, guide)
            latents = sampler.function()(spec, velocity, noise, sample_cfg, prefetch_to(device, step_noise))
            images = decode(latents.float())
        return images.float()  # stays on the device: sample_to_npz copies it back asynchronously

    return Generator(
        generate=generate,
        latent_shape=tuple(spec.latent_shape),
        num_classes=spec.num_classes,
        quantize=sample_cfg.quantize,
        fingerprint=sample_fingerprint(spec.name, sample_cfg, fingerprint_extra),
        fingerprint_settings=fingerprint_settings(spec.name, sample_cfg, fingerprint_extra),
    )


def fingerprint_settings(model_name: str, sample_cfg: SampleSection, extra: dict[str, Any] | None = None) -> dict:
    """Every setting that changes a sample (precision, attention and compile included), not the run's size
    (``num``, ``batch_size``, ``shard_size``): what :func:`sample_fingerprint` hashes, kept readable so that a
    mismatch can name the settings that changed."""
    return json.loads(json.dumps({
        "model": model_name,
        "sample": {k: v for k, v in _asdict(sample_cfg).items() if k not in ("num", "batch_size", "shard_size")},
        **(extra or {}),
    }, sort_keys=True, default=str))  # fmt: skip


def sample_fingerprint(model_name: str, sample_cfg: SampleSection, extra: dict[str, Any] | None = None) -> str:
    """The shard fingerprint of sampling ``model_name`` with ``sample_cfg`` (a hash of :func:`fingerprint_settings`)."""
    settings = fingerprint_settings(model_name, sample_cfg, extra)
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _asdict(obj: Any) -> dict[str, Any]:
    import dataclasses

    return dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else dict(obj)
