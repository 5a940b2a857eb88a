"""The artifact registry: every downloadable file the benchmark uses, where it lives and how to check it.

Facts come from the project's reference notes. A value the sources do not publish (most sizes and hashes) is
``None``. How each file's integrity is established (:func:`integrity`): Hugging Face files against the sha256
the hub publishes for LFS files; other hosts against a pinned sha256 (with ``sha256_source`` saying where it
was published) or a published hash prefix; anything else is "unverified (first download)": its hash is
recorded in the hash lock on first download and later copies are compared with that record.

Entries can be overridden (for mirrors, or for tests that serve files locally) with
:func:`registry_overrides` or the ``MIXFLOW_BENCH_REGISTRY_OVERRIDES`` environment variable, which names a
JSON file mapping an artifact name to the fields to replace (a name not in the registry defines a new one).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from mixflow_bench.errors import SettingError, UnknownNameError

Kind = Literal["checkpoint", "reference-batch", "weights", "stats", "dataset"]
KINDS: tuple[str, ...] = ("checkpoint", "reference-batch", "weights", "stats", "dataset")
OVERRIDES_ENV = "MIXFLOW_BENCH_REGISTRY_OVERRIDES"
LAYOUTS: tuple[str, ...] = ("plain", "lightning-ema")  # read by mixflow_bench.hub.checkpoint.read_state_dict


@dataclass(frozen=True)
class HFSource:
    """A file in a Hugging Face repository, fetched with ``huggingface_hub.hf_hub_download``."""

    repo_id: str
    filename: str
    revision: str = "main"
    repo_type: str = "model"
    companions: tuple[str, ...] = ()  # small files fetched next to it (e.g. config.json for from_pretrained)

    @property
    def url(self) -> str:
        return f"https://huggingface.co/{self.repo_id}/resolve/{self.revision}/{self.filename}"


@dataclass(frozen=True)
class Artifact:
    """One registry entry: ``urls`` are direct HTTP(S) mirrors tried in order, ``hf`` a Hugging Face file."""

    name: str
    kind: Kind
    description: str
    filename: str  # local file name in the cache
    urls: tuple[str, ...] = ()
    hf: HFSource | None = None
    size: int | None = None  # exact size in bytes, where published
    sha256: str | None = None  # where published; otherwise recorded in the hash lock on first download
    sha256_source: str | None = None  # where a pinned size / sha256 was published
    sha256_prefix: str | None = None  # a published hash prefix (torch.hub file-name convention)
    approx_size: int | None = None  # an estimate from parameter counts, for display only, never checked
    used_by: tuple[str, ...] = ()  # models / recipes that need it
    check: str = "auto"  # content check after download: auto | state-dict | npz | tar | none (hub.checkpoint)
    layout: str = "plain"  # how the weights sit in the file: plain | lightning-ema (LAYOUTS)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"artifact {self.name!r}: kind {self.kind!r} is not one of {KINDS}")
        if bool(self.urls) == (self.hf is not None):
            raise ValueError(f"artifact {self.name!r}: give either direct urls or a Hugging Face source")
        if self.layout not in LAYOUTS:
            raise ValueError(f"artifact {self.name!r}: layout {self.layout!r} is not one of {LAYOUTS}")
        for key in ("sha256", "sha256_prefix"):  # hashes compare in lowercase hex; an uppercase pin is the same
            value = getattr(self, key)
            if value is not None:
                if not isinstance(value, str) or not re.fullmatch(r"[0-9a-fA-F]+", value):
                    raise SettingError(f"artifact {self.name!r}: {key} {value!r} is not hexadecimal")
                object.__setattr__(self, key, value.lower())
        if self.sha256 is not None and len(self.sha256) != 64:
            raise SettingError(f"artifact {self.name!r}: sha256 must be 64 hex digits")

    @property
    def source(self) -> str:
        """Where the file comes from, for messages."""
        return self.hf.url if self.hf is not None else self.urls[0]


_OAI = "https://openaipublic.blob.core.windows.net/diffusion/jul-2021/ref_batches/imagenet"
_RAE = "nyu-visionx/RAE-collections"
_RAE_WHY = "RAE DiT^DH (DINOv2-B with registers latents)"
_RAE_COMMIT = "1be4f03273523431f099a934da4cf1940dc6039f"

_BUILTIN: tuple[Artifact, ...] = (
    Artifact(
        name="sit-xl-2-256",
        kind="checkpoint",
        description="SiT-XL/2 256x256, 7M iterations; raw EMA state dict (learn_sigma, final linear 32)",
        filename="SiT-XL-2-256x256.pt",
        urls=(
            "https://www.dl.dropboxusercontent.com/scl/fi/as9oeomcbub47de5g4be0/SiT-XL-2-256.pt"
            "?rlkey=uxzxmpicu46coq3msb17b9ofa&dl=0",
        ),
        approx_size=675_129_632 * 4,
        used_by=("sit-xl-2", "sit"),
    ),
    Artifact(
        name="repa-sit-xl-2-256",
        kind="checkpoint",
        description="SiT-XL/2 + REPA, 4M iterations; raw EMA state dict including projectors.0",
        filename="last.pt",
        urls=(
            "https://www.dl.dropboxusercontent.com/scl/fi/cxedbs4da5ugjq5wg3zrg/last.pt"
            "?rlkey=8otgrdkno0nd89po3dpwngwcc&st=apcc645o&dl=0",
        ),
        approx_size=683_242_512 * 4,
        used_by=("repa-sit-xl-2", "repa"),
    ),
    Artifact(
        name="rae-decoder-256",
        kind="weights",
        description="RAE ViT-XL pixel decoder for DINOv2-B(reg) latents, 256 px (GeneralDecoder state dict)",
        filename="model.pt",
        hf=HFSource(_RAE, "decoders/dinov2/wReg_base/ViTXL_n08/model.pt"),
        approx_size=415_400_000 * 4,
        used_by=("rae", "rae-dith-xl-256"),
    ),
    Artifact(
        name="rae-decoder-512",
        kind="weights",
        description="RAE ViT-XL pixel decoder for DINOv2-B(reg) latents, 512 px",
        filename="model.pt",
        hf=HFSource(_RAE, "decoders/dinov2/wReg_base/ViTXL_n08_i512/model.pt"),
        approx_size=415_400_000 * 4,
        used_by=("rae", "rae-dith-xl-512"),
    ),
    Artifact(
        name="rae-stats-256",
        kind="stats",
        description="RAE latent normalisation stat.pt ({'mean', 'var'}), ImageNet-1k, 256 px",
        filename="stat.pt",
        hf=HFSource(_RAE, "stats/dinov2/wReg_base/imagenet1k/stat.pt"),
        used_by=("rae", "rae-dith-xl-256"),
    ),
    Artifact(
        name="rae-stats-512",
        kind="stats",
        description="RAE latent normalisation stat.pt, ImageNet-1k, 512 px",
        filename="stat.pt",
        hf=HFSource(_RAE, "stats/dinov2/wReg_base/imagenet1k_512/stat.pt"),
        used_by=("rae", "rae-dith-xl-512"),
    ),
    Artifact(
        name="rae-dith-xl-256",
        kind="checkpoint",
        description=f"{_RAE_WHY} XL, 256 px; EMA state dict with RoPE buffers and t_embedder.W",
        filename="stage2_model.pt",
        # revision: the commit a public download script pins for this file; the other RAE files have no
        # published commit and follow main (each is still checked against the hub's own sha256)
        hf=HFSource(_RAE, "DiTs/Dinov2/wReg_base/ImageNet256/DiTDH-XL/stage2_model.pt", revision=_RAE_COMMIT),
        approx_size=838_778_196 * 4,
        used_by=("rae", "rae-dith-xl-256"),
    ),
    Artifact(
        name="rae-dith-xl-512",
        kind="checkpoint",
        description=f"{_RAE_WHY} XL, 512 px, 400 epochs",
        filename="stage2_model.pt",
        hf=HFSource(_RAE, "DiTs/Dinov2/wReg_base/ImageNet512/DiTDH-XL_ep400/stage2_model.pt"),
        approx_size=838_778_196 * 4,
        used_by=("rae", "rae-dith-xl-512"),
    ),
    Artifact(
        name="rae-dith-s-256",
        kind="checkpoint",
        description=f"{_RAE_WHY} S, 256 px, 14 epochs: the autoguidance guide model",
        approx_size=790_000_000,  # "≈0.79 GB" in the reference notes (computed, fp32)
        filename="stage2_model.pt",
        hf=HFSource(_RAE, "DiTs/Dinov2/wReg_base/ImageNet256/DiTDH-S_ep14/stage2_model.pt"),
        used_by=("rae", "rae-dith-xl-256-ag"),
    ),
    Artifact(
        name="rae-dith-s-512",
        kind="checkpoint",
        description=f"{_RAE_WHY} S, 512 px, 20 epochs: the autoguidance guide model",
        approx_size=790_000_000,  # "≈0.79 GB" in the reference notes (computed, fp32)
        filename="stage2_model.pt",
        hf=HFSource(_RAE, "DiTs/Dinov2/wReg_base/ImageNet512/DiTDH-S_ep20/stage2_model.pt"),
        used_by=("rae", "rae-dith-xl-512-ag"),
    ),
    Artifact(
        name="dinov2-reg-b",
        kind="weights",
        description="DINOv2-B/14 with 4 registers (transformers Dinov2WithRegistersModel): the RAE encoder",
        filename="model.safetensors",
        hf=HFSource("facebook/dinov2-with-registers-base", "model.safetensors", companions=("config.json",)),
        used_by=("rae",),
    ),
    Artifact(
        name="sd-vae-ft-ema",
        kind="weights",
        description="Stable Diffusion VAE, EMA fine-tune (diffusers AutoencoderKL); SiT/REPA sampling",
        filename="diffusion_pytorch_model.safetensors",
        hf=HFSource(
            "stabilityai/sd-vae-ft-ema", "diffusion_pytorch_model.safetensors", companions=("config.json",)
        ),
        used_by=("sit", "repa"),
    ),
    Artifact(
        name="sd-vae-ft-mse",
        kind="weights",
        description="Stable Diffusion VAE, MSE fine-tune (diffusers AutoencoderKL); REPA training latents",
        filename="diffusion_pytorch_model.safetensors",
        hf=HFSource(
            "stabilityai/sd-vae-ft-mse", "diffusion_pytorch_model.safetensors", companions=("config.json",)
        ),
        used_by=("sit", "repa"),
    ),
    Artifact(
        name="adm-ref-imagenet256",
        kind="reference-batch",
        description="ADM evaluator reference batch, ImageNet 256 (arr_0 images + Inception mu/sigma)",
        filename="VIRTUAL_imagenet256_labeled.npz",
        urls=(f"{_OAI}/256/VIRTUAL_imagenet256_labeled.npz",),
        used_by=("eval-256",),
    ),
    Artifact(
        name="adm-ref-imagenet512",
        kind="reference-batch",
        description="ADM evaluator reference batch, ImageNet 512",
        filename="VIRTUAL_imagenet512.npz",
        urls=(f"{_OAI}/512/VIRTUAL_imagenet512.npz",),
        used_by=("eval-512",),
    ),
    Artifact(
        name="inception-torch-fidelity",
        kind="weights",
        description="TF-2015 Inception-v3 in PyTorch (torch-fidelity URL_INCEPTION_V3; FID/sFID/IS/PR)",
        filename="weights-inception-2015-12-05-6726825d.pth",
        urls=(
            "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
            "weights-inception-2015-12-05-6726825d.pth",
        ),
        sha256_prefix="6726825d",
        used_by=("eval", "eval-torchmetrics"),
    ),
    Artifact(
        name="dinov2-vit-l",
        kind="weights",
        description="DINOv2 ViT-L/14 (transformers Dinov2Model): the FD-DINOv2 feature network",
        filename="model.safetensors",
        hf=HFSource("facebook/dinov2-large", "model.safetensors", companions=("config.json",)),
        used_by=("eval-fd-dinov2",),
    ),
)

# GMFlow (Chen et al., ICML 2025): the released GM-DiT-XL/2 (K = 8) EMA transformer of the Diffusers pipeline,
# bf16 variant; its parameter names are those of mixflow_bench.models.gmdit. Checked against the host's sha256.
_BUILTIN = _BUILTIN + (
    Artifact(
        name="gmflow-dit",
        kind="checkpoint",
        description="GMFlow GM-DiT-XL/2 K=8 ImageNet 256 EMA transformer (Diffusers safetensors, bf16 variant)",
        filename="diffusion_pytorch_model.bf16.safetensors",
        hf=HFSource("Lakonik/gmflow_imagenet_k8_ema", "transformer/diffusion_pytorch_model.bf16.safetensors"),
        approx_size=675_000_000 * 2,  # DiT-XL/2 + 0.2 % for the GM head, 2 bytes a parameter
        used_by=("gmflow", "gmflow-dit-xl-2"),
    ),
)

# κ-FC mixed source (Nayal et al., arXiv 2604.09181): the released PyTorch Lightning checkpoints, each holding the
# SongUNet velocity network (``denoiser.*`` and its EMA ``ema.module.*``) and the source network
# (``noise_predictor.network.*``), read with layout "lightning-ema". Sizes are not published; each file is checked
# against the host's sha256.
_MIXED_SOURCE_WHY = "κ-FC mixed-source SongUNet (DDPM++) + source U-Net, Lightning checkpoint with EMA"
_BUILTIN = _BUILTIN + (
    Artifact(
        name="mixed-source-cifar10",
        kind="checkpoint",
        description=f"{_MIXED_SOURCE_WHY}; CIFAR-10 32x32, 500k steps, beta 1e-5",
        filename="mixflow_cifar10.ckpt",
        hf=HFSource("nazirnayal98/MixFlow-CIFAR10", "mixflow_cifar10.ckpt"),
        used_by=("mixed-source", "mixed-source-cifar10"),
        layout="lightning-ema",
    ),
    Artifact(
        name="mixed-source-ffhq-64",
        kind="checkpoint",
        description=f"{_MIXED_SOURCE_WHY}; FFHQ 64x64, 800k steps, beta 5e-5",
        filename="mixflow_ffhqv2_64x64",
        hf=HFSource("nazirnayal98/MixFlow-FFHQ-64x64", "mixflow_ffhqv2_64x64"),
        used_by=("mixed-source", "mixed-source-ffhq-64"),
        layout="lightning-ema",
    ),
    Artifact(
        name="mixed-source-afhqv2-64",
        kind="checkpoint",
        description=f"{_MIXED_SOURCE_WHY}; AFHQv2 64x64, 800k steps, beta 5e-5",
        filename="mixflow_afhqv2_64x64",
        hf=HFSource("nazirnayal98/MixFlow-AFHQ-64x64", "mixflow_afhqv2_64x64"),
        used_by=("mixed-source", "mixed-source-afhqv2-64"),
        layout="lightning-ema",
    ),
)

# Data sets whose training images become reference batches (``mixflow-bench data prepare --reference``).
_BUILTIN = _BUILTIN + (
    Artifact(
        name="cifar10-python",
        kind="dataset",
        description="CIFAR-10, the official python-pickle archive (data_batch_1..5: the 50K training images)",
        filename="cifar-10-python.tar.gz",
        urls=("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",),
        sha256="6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
        sha256_source="torchvision's prototype Cifar10 dataset (pytorch/vision commit 0b02d42, "
        "torchvision/prototype/datasets/_builtin/cifar.py); torchvision's CIFAR10 checks md5 "
        "c58f30108f718f92721af3b95e74349a",
        approx_size=170_000_000,
        used_by=("mixed-source-cifar10",),
        check="tar",
    ),
)

_overrides: list[Mapping[str, Mapping[str, Any]]] = []


def _apply(base: dict[str, Artifact], overrides: Mapping[str, Mapping[str, Any]]) -> None:
    known = {f.name for f in dataclasses.fields(Artifact)}
    for name, fields in overrides.items():
        unknown = set(fields) - known
        if unknown:
            raise SettingError(f"registry override for {name!r}: unknown field(s) {sorted(unknown)}")
        values = dict(fields)
        for key in ("urls", "used_by"):
            if key in values and isinstance(values[key], str):
                values[key] = (values[key],)
            if key in values:
                values[key] = tuple(values[key])
        if isinstance(values.get("hf"), Mapping):
            hf = dict(values["hf"])
            hf["companions"] = tuple(hf.get("companions", ()))
            values["hf"] = HFSource(**hf)
        if name in base:
            if "urls" in values and "hf" not in values:
                values["hf"] = None
            if "hf" in values and values["hf"] is not None and "urls" not in values:
                values["urls"] = ()
            base[name] = dataclasses.replace(base[name], **values)
        else:
            base[name] = Artifact(name=name, **values)


def registry() -> dict[str, Artifact]:
    """All artifacts by name, with overrides applied (environment file first, then context overrides)."""
    table = {a.name: a for a in _BUILTIN}
    env_file = os.environ.get(OVERRIDES_ENV)
    if env_file:
        try:
            data = json.loads(Path(env_file).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise SettingError(f"{OVERRIDES_ENV}={env_file!r} is not a readable JSON file: {exc}") from exc
        if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
            raise SettingError(f"{OVERRIDES_ENV}={env_file!r}: expected a JSON object of artifact name -> fields")
        try:
            _apply(table, data)
        except (TypeError, ValueError) as exc:
            raise SettingError(f"{OVERRIDES_ENV}={env_file!r}: {exc}") from exc
    for overrides in _overrides:
        _apply(table, overrides)
    return table


def get_artifact(name: str) -> Artifact:
    """The registry entry called ``name``; a clear error listing the known names otherwise."""
    table = registry()
    if name not in table:
        raise UnknownNameError("artifact", name, sorted(table))
    return table[name]


def artifact_names() -> list[str]:
    return sorted(registry())


@contextlib.contextmanager
def registry_overrides(overrides: Mapping[str, Mapping[str, Any]]) -> Iterator[None]:
    """Temporarily replace fields of registry entries (or add entries) inside a ``with`` block."""
    _apply(registry(), overrides)  # validate before installing
    _overrides.append(overrides)
    try:
        yield
    finally:
        _overrides.remove(overrides)


INCEPTION_ARTIFACT = "inception-torch-fidelity"
FD_DINOV2_ARTIFACT = "dinov2-vit-l"


def codec_artifacts(codec: str, resolution: int | None) -> list[str]:
    """The artifacts a latent codec loads: the SD-VAE weights, or RAE's encoder, decoder and latent stats."""
    if codec == "rae-dinov2-b":
        sizes = (resolution,) if resolution in (256, 512) else (256, 512)
        return ["dinov2-reg-b"] + [f"rae-{part}-{r}" for r in sizes for part in ("decoder", "stats")]
    return [codec] if codec in registry() else []


def model_artifacts(model: str, checkpoint: str | None = None) -> list[str]:
    """The artifacts sampling zoo model ``model`` needs: its checkpoint (unless ``checkpoint`` replaces it) and
    its decoder's files. Names outside the zoo (toy models) need none."""
    from mixflow_bench.models.zoo import ZOO

    spec = ZOO.get(model)
    if spec is None:
        return []
    names = [spec.checkpoint] if spec.checkpoint and not checkpoint else []
    if checkpoint and checkpoint in registry():
        names.append(checkpoint)
    if spec.decoder:
        names += codec_artifacts(spec.decoder, spec.resolution)
    return names


Integrity = Literal["host sha256", "pinned sha256", "pinned sha256 prefix", "unverified (first download)"]


def integrity(art: Artifact) -> Integrity:
    """How a download of ``art`` is checked: the host's published sha256 (Hugging Face LFS files), a sha256
    pinned here, a published hash prefix, or nothing but the record of the first download."""
    if art.sha256 is not None:
        return "pinned sha256"
    if art.hf is not None:
        return "host sha256"
    if art.sha256_prefix is not None:
        return "pinned sha256 prefix"
    return "unverified (first download)"
