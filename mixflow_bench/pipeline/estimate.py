"""GPU-hour estimates for ``reproduce --plan``, from the throughputs measured by ``benchmarks/`` (package data in
``mixflow_bench/pipeline/throughputs/<gpu>-<date>/``, so an installed package has them).

Each estimate follows the recipe's precision and compile settings: ``tf32`` eager is the exact path (the recipes'
default), ``bf16`` + ``torch.compile`` the fast path (``--fast``). The measurements come from
``benchmarks/bench_official.py`` (``official-*.json``: rows ``exact`` and ``fast``, stable timing; its ``official``
rows time the official code and estimate nothing) and, for GPU types it has not measured, from the older
``bench_sampling.py`` / ``bench_train.py`` files (``sampling-*.json``, ``train.json``), whose exact-path rows are
labelled ``official`` (an emulation of the official settings: TF32, eager). A sampling estimate is the measured
seconds per sampler step of one batch (guidance included), times the recipe's network evaluations per image, plus
the measured decode time, divided by the measured batch; a training estimate is images / measured images per
second. There is one estimate per GPU type that has measurements, and each says which measurement (file, case,
path, batch) it comes from. What was not measured (another model size, precision, guidance or sampler) is derived
from the nearest measurement and labelled as an assumption.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

THROUGHPUTS = Path(__file__).resolve().parent / "throughputs"

# benchmark case (the "case" field of the JSON rows) -> model names it measures
SAMPLING_CASES = {
    "SiT-XL/2 256, SDE-250, CFG 1.5": "sit-xl-2",
    "RAE DiT^DH-XL 256, Euler-49, AG 1.42": "rae-dith-xl-256",
    "RAE DiT^DH-XL 512, Euler-49, AG 1.5": "rae-dith-xl-512",
}
TRAINING_CASES = {
    "SiT-XL/2 256, MixFlow gamma 0.8": "sit-xl-2",
    "DiT^DH-XL 256, MixFlow gamma 0.4": "rae-dith-xl-256",
}
# model -> (measured model it is derived from, cost factor, why); a factor of 1.0 with no reason is "same network"
DERIVED: dict[str, tuple[str, float, str | None]] = {
    "repa-sit-xl-2": ("sit-xl-2", 1.0, None),  # SiT-XL/2 backbone; the projector is not run at sampling
    "sit-b-2": ("sit-xl-2", 23.01 / 118.64, "SiT-B/2 not measured: SiT-XL/2 x GFLOPs ratio 23.0/118.6"),
    "sit-xl-2-512": ("sit-xl-2", 524.6 / 118.64, "SiT-XL/2 512 not measured: SiT-XL/2 256 x GFLOPs ratio 524.6/118.6"),
    "rae-dith-xl-512": ("rae-dith-xl-256", 4.0, "DiT^DH-XL 512 training not measured: 256 x 4 (4x tokens)"),
    "gmflow-dit-xl-2": ("sit-xl-2", 1.0, "GM-DiT not measured: as SiT-XL/2 (DiT-XL/2 trunk; GM head +0.2 %)"),
    # κ-FC mixed-source SongUNets: 21.2 / 41.9 GMACs per forward (torch FlopCounterMode) against SiT-XL/2's 118.6
    "mixed-source-cifar10": ("sit-xl-2", 21.2 / 118.64, "SongUNet not measured: SiT-XL/2 x GMACs ratio 21.2/118.6"),
    "mixed-source-ffhq-64": ("sit-xl-2", 41.9 / 118.64, "SongUNet not measured: SiT-XL/2 x GMACs ratio 41.9/118.6"),
    "mixed-source-afhqv2-64": ("sit-xl-2", 41.9 / 118.64, "SongUNet not measured: SiT-XL/2 x GMACs ratio 41.9/118.6"),
}
ASSUMPTIONS = (
    "throughputs measured by benchmarks/ (mixflow_bench/pipeline/throughputs/, one row per GPU type and path); the "
    "basis column names the measurement, 'assumed' marks what was derived; evaluation not counted"
)


@dataclass(frozen=True)
class Measurement:
    """One benchmark row: a model on one GPU type, on the official-equivalent or the fast path."""

    gpu: str  # device name as the benchmark recorded it
    source: str  # file, relative to the package (pipeline/throughputs/<gpu>-<date>/<file>)
    case: str
    path: str  # exact | fast | fast+graphs; legacy files: official (the emulated exact settings)
    batch: int
    precision: str
    compile: bool | str
    images_per_s: float
    s_per_step: float | None = None  # sampling: seconds per sampler step of one batch, guidance included
    decode_s: float | None = None  # sampling: seconds to decode one batch
    stable: bool = False  # from bench_official.py (settled warm-up, median of repeats), preferred where present
    date_utc: str = ""  # bench_official.py: when the run started (ISO 8601), so the newest code's run is used


@dataclass(frozen=True)
class Estimate:
    """GPU-hours on one GPU type, with the measurement behind them and what had to be assumed."""

    gpu: str
    hours: float
    basis: str
    assumptions: tuple[str, ...] = field(default_factory=tuple)

    @property
    def label(self) -> str:
        kind = "assumed: " + "; ".join(self.assumptions) if self.assumptions else "measured"
        return f"{short_gpu(self.gpu)}: {self.basis} ({kind})"


def short_gpu(name: str) -> str:
    """``NVIDIA H100 80GB HBM3`` -> ``H100``."""
    m = re.search(r"\b([A-Z]{1,2}\d{2,4}[A-Z]?)\b", name)
    return m.group(1) if m else name


def _official_rows(file: Path, data: dict, root: Path) -> list[Measurement]:
    """The exact and fast rows of a ``bench_official.py`` file (not its --quick runs, not the official code)."""
    if data.get("quick"):
        return []
    out = []
    for r in data.get("rows") or []:
        if r.get("path") == "official" or r.get("status") != "ok":
            continue
        sampling = r.get("kind", data.get("kind")) == "sampling"
        out.append(
            Measurement(
                gpu=str(r.get("gpu", data.get("gpu", "?"))), source=str(file.relative_to(Path(root).parents[1])),
                case=r["case"], path=r["path"], batch=int(r["batch"]), precision=r["precision"],
                compile=r["compile"], images_per_s=float(r["images_per_s"]),
                s_per_step=r.get("s_per_step") if sampling else None, decode_s=r.get("decode_s"), stable=True,
                date_utc=str(data.get("date_utc", "")),
            )
        )  # fmt: skip
    return out


@lru_cache(maxsize=4)
def load_measurements(root: Path = THROUGHPUTS) -> tuple[Measurement, ...]:
    """Every timing row of ``bench_official.py`` (``official-*.json``) and of the older sampling
    (``sampling-*.json``) and training (``train.json``) benchmarks."""
    rows: list[Measurement] = []
    for file in sorted(Path(root).glob("*/*.json")) if Path(root).is_dir() else []:
        official = file.name.startswith("official-")
        if not (official or file.name.startswith("sampling") or file.name == "train.json"):
            continue
        try:
            data = json.loads(file.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if official:
            rows += _official_rows(file, data, root)
            continue
        for r in data.get("rows") or []:
            rows.append(
                Measurement(
                    gpu=str(data.get("device", "?")), source=str(file.relative_to(Path(root).parents[1])),
                    case=r["case"], path=r["path"], batch=int(r["batch"]),
                    precision=r.get("precision", "tf32" if r["path"] == "official" else "bf16"),
                    compile=r.get("compile", r["path"] != "official"), images_per_s=float(r["images_per_s"]),
                    s_per_step=r.get("s_per_step") if file.name.startswith("sampling") else None,
                    decode_s=r.get("decode_s"),
                )
            )  # fmt: skip
    return tuple(rows)


def _path_for(precision: str, compile: bool, cuda_graphs: bool = False) -> tuple[str, bool, str | None]:
    """(benchmark path, compiled?) that runs like these settings, and an assumption when none does exactly."""
    if precision == "tf32":
        return "exact", bool(compile), None
    if precision == "bf16" and compile:
        return ("fast+graphs" if cuda_graphs else "fast"), True, None
    if precision == "fp8" and compile:  # --fast --fp8: bench_official.py --fp8's fast-fp8 rows
        return "fast-fp8", True, None
    if precision == "fp32":
        return "exact", bool(compile), "fp32 (TF32 off) not measured: the TF32 rate is used, fp32 is slower"
    settings = f"{precision}{' + compile' if compile else ' eager'}"
    return "exact", False, f"{settings} not measured: the TF32 eager rate is used"


def _pick(rows: list[Measurement], path: str, compiled: bool | None = None) -> tuple[Measurement | None, str | None]:
    """The measurement of ``path`` on one GPU type, and an assumption when it had to stand in for another.

    bench_official.py's rows where it has one, else the older files' (whose exact rows are called ``official``).
    Where bench_official.py measured a case more than once, its newest run (it measures the current code; an older
    run can predate a speed-up); the slowest row of that run, or of the older files, where several remain.
    ``compiled`` (exact path only) asks for the TF32 row with or without ``torch.compile``; the other one stands in,
    said as an assumption, when only it was measured.
    """
    found = [m for m in rows if m.path == path and m.compile in (False, "default", "reduce-overhead")]
    if not found and path == "exact":
        found = [m for m in rows if m.path == "official" and not m.stable and m.compile in (False, None)]
    if not found and path == "fast+graphs":
        return _pick(rows, "fast")
    if not found and path == "fast-fp8":
        m, _ = _pick(rows, "fast")
        return m, (None if m is None else "fp8 + compile not measured on this GPU: the bf16 + compile rate is used")
    if any(m.stable for m in found):
        found = [m for m in found if m.stable]
    assumption = None
    if path == "exact" and compiled is not None and found:
        same = [m for m in found if bool(m.compile) == compiled]
        if not same:
            want, used = ("TF32 + compile", "TF32 eager") if compiled else ("TF32 eager", "TF32 + compile")
            assumption = f"{want} not measured on this GPU: the {used} rate is used"
        found = same or found
    if found and found[0].stable:
        newest = max(m.date_utc for m in found)
        found = [m for m in found if m.date_utc == newest]
    return (min(found, key=lambda m: m.images_per_s) if found else None), assumption


def _candidates(model: str, cases: dict[str, str], root: Path) -> tuple[list[Measurement], float, str | None]:
    measured_model, factor, why = model, 1.0, None
    if model not in cases.values() and model in DERIVED:
        measured_model, factor, why = DERIVED[model]
    rows = [m for m in load_measurements(root) if cases.get(m.case) == measured_model]
    return rows, factor, why


def sampling_nfe(sample: Any, model: str | None = None) -> int:
    """Network evaluations per image for a SampleSection of zoo model ``model``, guidance not counted: the sampler
    registry's count (:func:`results.protocol.sampler_nfe`), or what it assumes for an adaptive sampler (dopri5
    ~ 2 x steps, rk45 125)."""
    from mixflow_bench.results.protocol import sampler_nfe
    from mixflow_bench.samplers import get_sampler

    assumed = get_sampler(sample.sampler).assumed_nfe
    if assumed is not None:
        return assumed(sample.steps)
    nfe = sampler_nfe(sample.sampler, sample.steps, model)
    return nfe if isinstance(nfe, int) else sample.steps


def sampling_estimates(model: str, sample: Any, root: Path = THROUGHPUTS) -> list[Estimate]:
    """GPU-hours to sample ``sample.num`` images of ``model``, one estimate per measured GPU type."""
    rows, factor, why = _candidates(model, SAMPLING_CASES, root)
    path, compiled, path_assumption = _path_for(sample.precision, sample.compile, getattr(sample, "cuda_graphs", False))
    guided = sample.guidance.kind != "none" and not (sample.guidance.kind == "cfg" and sample.guidance.scale == 1.0)
    nfe = sampling_nfe(sample, model)
    out = []
    for gpu in sorted({m.gpu for m in rows}):
        m, pick_assumption = _pick([r for r in rows if r.gpu == gpu], path, compiled)
        if m is None or m.s_per_step is None:
            continue
        assumptions = [a for a in (why, path_assumption, pick_assumption) if a]
        step = m.s_per_step * factor
        if not guided:  # every measured sampling case is guided
            step *= 0.5
            assumptions.append("unguided: half the measured guided step")
        if sample.sampler == "dopri5":
            assumptions.append("dopri5: ~2 x steps evaluations")
        seconds_per_image = (nfe * step + (m.decode_s or 0.0) * factor) / m.batch
        basis = (f"{m.source}, {m.case}, {m.path} ({m.precision}, batch {m.batch}): {m.s_per_step:.4g} s/step "
                 f"x {nfe} NFE")  # fmt: skip
        if m.batch != sample.batch_size:
            basis += f"; measured at batch {m.batch}, the recipe samples at {sample.batch_size}"
        out.append(Estimate(gpu, sample.num * seconds_per_image / 3600.0, basis, tuple(assumptions)))
    return out


def training_estimates(model: str, train: Any, root: Path = THROUGHPUTS) -> list[Estimate]:
    """GPU-hours for ``train.steps`` steps of ``train.batch_size`` images, one estimate per measured GPU type."""
    rows, factor, why = _candidates(model, TRAINING_CASES, root)
    # the training engine runs fp32 with TF32 matmuls (TrainConfig.tf32), the benchmarks' exact path
    path, compiled, path_assumption = _path_for("tf32" if train.precision == "fp32" else train.precision, train.compile)
    out = []
    for gpu in sorted({m.gpu for m in rows}):
        m, pick_assumption = _pick([r for r in rows if r.gpu == gpu], path, compiled)
        if m is None:
            continue
        assumptions = tuple(a for a in (why, path_assumption, pick_assumption) if a)
        images = train.steps * train.batch_size
        basis = f"{m.source}, {m.case}, {m.path} (batch {m.batch}): {m.images_per_s:.4g} img/s"
        out.append(Estimate(gpu, images * factor / m.images_per_s / 3600.0, basis, assumptions))
    return out


def gpu_hours_sampling(model: str, sample: Any) -> float | None:
    """The first GPU type's sampling estimate (see :func:`sampling_estimates`), or None when nothing applies."""
    est = sampling_estimates(model, sample)
    return est[0].hours if est else None


def gpu_hours_training(model: str, train: Any) -> float | None:
    """The first GPU type's training estimate (see :func:`training_estimates`), or None when nothing applies."""
    est = training_estimates(model, train)
    return est[0].hours if est else None


IMAGENET_TRAIN_IMAGES = 1_281_167
# fp32 images/s of one encoder pass (one orientation), measured by benchmarks/bench_data.py on an H100 with random
# weights of the real encoders, batch 64 (benchmarks/README.md, 2026-11-22)
MEASURED_ENCODE_PER_S: dict[tuple[str, int], float] = {
    ("sd-vae", 256): 442.9,
    ("sd-vae", 512): 103.2,
    ("rae-dinov2-b", 256): 922.7,
    ("rae-dinov2-b", 512): 191.1,
}


def latent_values_per_image(encoder: str, resolution: int) -> int | None:
    """Stored numbers per image and orientation: SD-VAE keeps its posterior mean and std (2 x 4 x H/8 x W/8),
    RAE the normalised DINOv2-B features (768 x H/16 x W/16)."""
    if encoder.startswith("sd-vae"):
        return 2 * 4 * (resolution // 8) ** 2
    if encoder == "rae-dinov2-b":
        return 768 * (resolution // 16) ** 2
    return None


def latent_cache_estimate(
    encoder: str, resolution: int, num_images: int = IMAGENET_TRAIN_IMAGES, flips: int = 2, bytes_per_value: int = 4
) -> tuple[float, float | None] | None:
    """(bytes on disk, encoding GPU-hours on one H100) of a ``data prepare`` cache; None for an unknown encoder.

    Defaults are ``data prepare``'s: ImageNet-1k train, original + mirrored, float32 (float16 halves the bytes).
    """
    values = latent_values_per_image(encoder, resolution)
    if values is None:
        return None
    family = "sd-vae" if encoder.startswith("sd-vae") else encoder
    rate = MEASURED_ENCODE_PER_S.get((family, resolution))
    hours = None if rate is None else num_images * flips / rate / 3600.0
    return float(num_images) * flips * values * bytes_per_value, hours
