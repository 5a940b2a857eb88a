"""Float8 inference linears: e4m3 weights and activations with row-wise scales, through ``torch._scaled_mm``.

For a linear ``y = x W^T + b`` with ``W`` of shape (N, K) and ``x`` flattened to (M, K), with
``e4m3(v)`` the round-to-nearest cast to ``torch.float8_e4m3fn`` (largest finite value 448):

* weight, once at conversion, one scale per output channel ``n``:
  ``s_w[n] = max(max_k |W[n, k]|, floor) / 448`` and ``W_q[n, k] = e4m3(clamp(W[n, k] / s_w[n], -448, 448))``;
* activation, at every call, one scale per row ``m``:
  ``s_a[m] = max(max_k |x[m, k]|, floor) / 448`` and ``x_q[m, k] = e4m3(clamp(x[m, k] / s_a[m], -448, 448))``;
* output: ``y[m, n] = s_a[m] * s_w[n] * sum_k x_q[m, k] W_q[n, k] + b[n]``, accumulated in float32 and rounded to
  bfloat16 (the bias is kept in bfloat16, the type ``_scaled_mm`` takes with a bfloat16 output).

``floor`` (1e-12) keeps the scale of an all-zero row positive: such a row quantises to zeros. The row maximum maps
to 448 exactly, so nothing saturates except through rounding; the clamp guards that edge.

``_scaled_mm`` wants both inner sizes (K and N) to be multiples of 16, ``x_q`` row-major and the second operand
column-major: ``W_q`` is stored (N, K) row-major, so ``W_q.t()`` is that column-major (K, N) operand. FP8 matmuls
run on CUDA GPUs of compute capability 8.9 or newer (Ada, Hopper, Blackwell); :func:`require_float8` says so in
one line elsewhere.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mixflow_bench.errors import UserError

E4M3 = torch.float8_e4m3fn
E4M3_MAX = 448.0  # torch.finfo(torch.float8_e4m3fn).max
AMAX_FLOOR = 1e-12
MIN_CAPABILITY = (8, 9)
# Linears smaller than this in either dimension stay as they are: a GEMM with fewer than 256 output features
# (or inputs) does too few FLOPs per element of x (or y) moved to be compute-bound on an H100/H200, so the extra
# pass that quantises x costs about what the FP8 matmul saves; SiT's output layer (1152 -> 32) is one of them.
MIN_FEATURES = 256
# Modules whose name ends so are the per-sample time and label embedders: they run on one row per sample (nothing
# to gain) and the models read the dtype of their first weight to cast the time features.
SKIPPED_PARENTS = ("embedder", "embedding")


class Float8UnsupportedError(UserError, ValueError):
    """FP8 sampling was asked for on a device (or a model) that cannot run it."""


def quantize_rowwise(t: Tensor) -> tuple[Tensor, Tensor]:
    """``(t_q, s)`` with ``t ~= t_q * s``: e4m3 values of ``t`` (..., K) and float32 row scales (..., 1).

    ``s = max(row amax, 1e-12) / 448``; ``t_q = e4m3(clamp(t / s, -448, 448))``.
    """
    t = t.float()
    scale = t.abs().amax(dim=-1, keepdim=True).clamp(min=AMAX_FLOOR) / E4M3_MAX
    return (t / scale).clamp(-E4M3_MAX, E4M3_MAX).to(E4M3), scale


class Float8Linear(nn.Module):
    """An ``nn.Linear`` for inference with e4m3 weights and per-row dynamic e4m3 activations (see module doc).

    The output is bfloat16 under autocast (as an autocast ``nn.Linear``'s would be) and the input's dtype
    otherwise. Buffers: ``weight_fp8`` (N, K) e4m3, ``weight_scale`` (1, N) float32, ``bias`` (N,) bfloat16 or None.
    """

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        n, k = linear.weight.shape
        if n % 16 or k % 16:
            raise ValueError(f"Float8Linear needs in and out features that are multiples of 16, got {k} -> {n}")
        self.in_features, self.out_features = k, n
        w_q, w_s = quantize_rowwise(linear.weight.detach())
        self.register_buffer("weight_fp8", w_q.contiguous())
        self.register_buffer("weight_scale", w_s.reshape(1, n).contiguous())
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().to(torch.bfloat16))

    def forward(self, x: Tensor) -> Tensor:
        lead, device_type = x.shape[:-1], x.device.type
        autocast = torch.is_autocast_enabled(device_type)
        with torch.autocast(device_type, enabled=False):  # typed operands: no autocast recast (on the CPU it alters y)
            x_q, x_s = quantize_rowwise(x.reshape(-1, self.in_features))
            y = torch._scaled_mm(
                x_q, self.weight_fp8.t(), scale_a=x_s, scale_b=self.weight_scale, bias=self.bias,
                out_dtype=torch.bfloat16,
            )  # fmt: skip
        y = y.reshape(*lead, self.out_features)
        return y if autocast else y.to(x.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


def dequantized_forward(layer: Float8Linear, x: Tensor) -> Tensor:
    """The float32 reference of ``layer(x)``: ``(x_q * s_a) @ (W_q * s_w)^T + b`` without the bfloat16 output."""
    x_q, x_s = quantize_rowwise(x.reshape(-1, layer.in_features))
    w = layer.weight_fp8.float() * layer.weight_scale.reshape(-1, 1)
    y = (x_q.float() * x_s) @ w.t()
    if layer.bias is not None:
        y = y + layer.bias.float()
    return y.reshape(*x.shape[:-1], layer.out_features)


def float8_eligible(name: str, module: nn.Module, min_features: int = MIN_FEATURES) -> bool:
    """Whether :func:`convert_to_float8` replaces ``module`` (qualified ``name``).

    Plain ``nn.Linear`` only (subclasses such as ``nn.MultiheadAttention``'s output projection, whose weight its
    owner reads directly, stay); both sizes multiples of 16 (a ``_scaled_mm`` requirement) and at least
    ``min_features``; not inside a time or label embedder.
    """
    if type(module) is not nn.Linear:
        return False
    n, k = module.weight.shape
    if n % 16 or k % 16 or min(n, k) < min_features:
        return False
    return not any(part.endswith(SKIPPED_PARENTS) for part in name.split(".")[:-1])


def convert_to_float8(model: nn.Module, *, min_features: int = MIN_FEATURES) -> int:
    """Replace the eligible linears of ``model`` in place by :class:`Float8Linear`; returns how many.

    Inference only: the model's remaining parameters stop requiring gradients. A linear shared by several
    parents becomes one ``Float8Linear`` shared the same way.
    """
    converted: dict[int, Float8Linear] = {}
    targets = [
        (name, module)
        for name, module in model.named_modules(remove_duplicate=False)
        if name and float8_eligible(name, module, min_features)
    ]
    for name, module in targets:
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        if id(module) not in converted:
            converted[id(module)] = Float8Linear(module)
        setattr(parent, attr, converted[id(module)])
    model.requires_grad_(False)
    return len(converted)


def float8_unsupported_reason(device: torch.device | str) -> str | None:
    """Why ``device`` cannot run FP8 matmuls (one line), or None when it can."""
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        where = "no CUDA device is visible" if device.type == "cuda" else f"this run is on {device.type}"
        return f"precision fp8 needs a CUDA GPU of compute capability 8.9 or newer (Ada, Hopper, Blackwell); {where}"
    capability = torch.cuda.get_device_capability(device)
    if tuple(capability) < MIN_CAPABILITY:
        return (
            f"precision fp8 needs compute capability 8.9 or newer (Ada, Hopper, Blackwell); "
            f"{torch.cuda.get_device_name(device)} has {capability[0]}.{capability[1]}: use precision bf16"
        )
    return None


def require_float8(device: torch.device | str) -> None:
    """Raise :class:`Float8UnsupportedError` (one line) unless ``device`` runs FP8 matmuls."""
    reason = float8_unsupported_reason(device)
    if reason is not None:
        raise Float8UnsupportedError(reason)
