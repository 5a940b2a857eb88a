"""Reading a state dict safely (never unpickling code), and checking that a downloaded file is what it claims."""

from __future__ import annotations

import functools
import pickle
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

from mixflow_bench.hub.http import IntegrityError
from mixflow_bench.hub.registry import Artifact

if TYPE_CHECKING:
    import torch
    from torch import Tensor


def sniff_format(path: Path) -> str:
    """``safetensors``, ``torch-zip``, ``torch-legacy``, ``torchscript``, or what else the file is."""
    with open(path, "rb") as fh:
        head = fh.read(16)
    if len(head) >= 9 and head[8:9] == b"{":
        header_len = int.from_bytes(head[:8], "little")
        if 0 < header_len < path.stat().st_size:
            return "safetensors"
    if head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
        except zipfile.BadZipFile:
            return "a damaged zip archive (a truncated torch checkpoint?)"
        if any(n.endswith("/constants.pkl") or "/code/" in n for n in names):
            return "torchscript"
        if any(n.endswith("/data.pkl") or n == "data.pkl" for n in names):
            return "torch-zip"
        if names and all(n.endswith(".npy") for n in names):
            return "a NumPy .npz archive"
        return "a zip archive that is not a torch checkpoint"
    if head[:1] == b"\x80":  # a pickle stream: the pre-1.6 torch format (checked again by torch.load)
        return "torch-legacy"
    if head.startswith(b"\x93NUMPY"):
        return "a NumPy .npy array"
    return "not a checkpoint (unrecognised bytes)"


def _velocity_weights(obj: object, which: str, path: Path) -> dict[str, Tensor]:
    """The velocity weights of a κ-FC Lightning checkpoint (layout ``lightning-ema``), as an :class:`IntegrityError`
    when the file holds something else."""
    from mixflow_bench.models.songunet import CheckpointMismatch, lightning_weights

    try:
        return lightning_weights(obj, which=which, source=str(path))
    except CheckpointMismatch as exc:
        raise IntegrityError(str(exc)) from exc


def read_state_dict(
    path: Path,
    *,
    map_location: str | torch.device = "cpu",
    unwrap: tuple[str, ...] = ("ema",),
    mmap: bool = False,
    layout: str = "plain",
    which: str = "ema",
) -> dict[str, Tensor]:
    """Read a flat ``{name: Tensor}`` state dict from a file, never unpickling code.

    Torch files are read with ``torch.load(weights_only=True)``; ``.safetensors`` with safetensors. The first key
    of ``unwrap`` present in a top-level dict is descended into (training checkpoints keep the EMA weights under
    ``"ema"``). ``mmap`` maps a zip checkpoint instead of reading it (cheap inspection). Entries whose value is
    ``None`` (e.g. RAE ``stat.pt``'s ``mean``) are dropped. ``layout`` ``lightning-ema`` reads a κ-FC Lightning
    checkpoint and returns the velocity weights that ``which`` names
    (:func:`mixflow_bench.models.songunet.lightning_weights`).
    Raises :class:`IntegrityError` for anything else, with the reason.
    """
    import torch

    fmt = sniff_format(path)
    if fmt == "safetensors":
        from safetensors.torch import load_file

        try:
            tensors = load_file(str(path), device=str(map_location))
        except Exception as exc:
            raise IntegrityError(f"{path}: not a readable safetensors file: {exc}") from exc
        return _velocity_weights(tensors, which, path) if layout == "lightning-ema" else tensors
    if fmt == "torchscript":
        raise IntegrityError(f"{path} is a TorchScript program, not a state dict; use torch.jit.load")
    if fmt not in ("torch-zip", "torch-legacy"):
        raise IntegrityError(f"{path} is {fmt}, not a PyTorch or safetensors checkpoint")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap and fmt == "torch-zip")
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise IntegrityError(
            f"{path} holds Python objects that only torch.load(weights_only=False) would rebuild, which runs "
            f"code from the file; refusing. ({first}) If you trust the file, re-save its tensors as a plain "
            f"state dict."
        ) from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile) as exc:
        raise IntegrityError(f"{path} is not a readable torch checkpoint (truncated?): {exc}") from exc
    if layout == "lightning-ema":
        return _velocity_weights(obj, which, path)
    if isinstance(obj, dict):
        for key in unwrap:
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict):
        raise IntegrityError(f"{path} holds a {type(obj).__name__}, not a state dict")
    bad = [k for k, v in obj.items() if v is not None and not isinstance(v, torch.Tensor)]
    if bad:
        raise IntegrityError(
            f"{path} is not a flat state dict: entries {bad[:5]} are not tensors "
            f"(a training checkpoint? unwrap one of its keys: {list(obj)[:8]})"
        )
    return {str(k): v for k, v in obj.items() if v is not None}


@functools.cache
def expected_shapes(name: str) -> dict[str, tuple[int, ...]] | None:
    """Parameter names and shapes artifact ``name`` must hold, from the project's own model definitions.

    A zoo checkpoint must match its model's ``state_dict()`` exactly (the models load with ``strict=True``);
    an RAE decoder the :class:`GeneralDecoder`'s; RAE ``stat.pt`` a ``var`` of (768, g, g). None: not known.
    The models are built on the ``meta`` device, so this costs no memory.
    """
    import torch

    from mixflow_bench.models.zoo import ZOO

    build = None
    for spec in ZOO.values():
        if spec.checkpoint == name:
            build = spec.build
            break
    for res in (256, 512):
        grid = res // 16
        if name == f"rae-decoder-{res}":
            from mixflow_bench.models.rae_stage1 import DecoderConfig, GeneralDecoder

            def build(grid: int = grid) -> torch.nn.Module:
                return GeneralDecoder(num_patches=grid * grid, cfg=DecoderConfig())
        if name == f"rae-stats-{res}":
            return {"var": (768, grid, grid)}
    if build is None:
        return None
    with torch.device("meta"):
        model = build()
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def sanity_check(art: Artifact, path: Path) -> None:
    """Check that a downloaded file is what artifact ``art`` claims, before it is marked good.

    State dicts (checkpoints, weights, stats) must load with ``weights_only=True`` and, where the project
    knows them (:func:`expected_shapes`), hold exactly the expected names and shapes; reference batches must
    be ``.npz`` archives with ``arr_0``. ``art.check`` picks the check: ``auto`` (from the kind, with the
    expected shapes), ``state-dict`` (loads, shapes not checked), ``npz``, ``tar`` (a readable tar archive,
    compressed or not: the data sets), or ``none``.
    Raises :class:`IntegrityError` with the reason.
    """
    check = art.check
    if check == "auto":
        check = {"reference-batch": "npz", "dataset": "tar"}.get(art.kind, "state-dict")
    if check == "none":
        return
    if check == "tar":
        import tarfile

        try:
            with tarfile.open(path, "r:*") as archive:
                archive.next()
        except (OSError, tarfile.TarError, EOFError) as exc:
            raise IntegrityError(f"{art.name}: {path} is not a readable tar archive: {exc}") from exc
        return
    if check == "npz":
        import numpy as np

        try:
            with np.load(path, allow_pickle=False) as archive:
                keys = list(archive.files)
        except (OSError, ValueError, zipfile.BadZipFile) as exc:
            msg = f"{art.name}: {path} is not a NumPy .npz archive ({sniff_format(path)}): {exc}"
            raise IntegrityError(msg) from exc
        if "arr_0" not in keys:
            raise IntegrityError(f"{art.name}: {path} has no arr_0 (keys: {keys})")
        return
    if check != "state-dict":
        raise ValueError(f"artifact {art.name!r}: unknown check {check!r} (auto, state-dict, npz, tar, none)")
    unwrap = ("ema",) if art.kind == "checkpoint" else ()
    state = read_state_dict(path, unwrap=unwrap, mmap=True, layout=art.layout)
    if not state:
        raise IntegrityError(f"{art.name}: {path} holds an empty state dict")
    expected = expected_shapes(art.name) if art.check == "auto" else None
    if expected is None:
        return
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    missing = sorted(set(expected) - set(shapes))
    bad = sorted(k for k in expected if k in shapes and shapes[k] != expected[k])
    extra = sorted(set(shapes) - set(expected)) if len(expected) > 1 else []
    if missing or bad or extra:
        parts = []
        if missing:
            parts.append(f"missing {missing[:4]}")
        if bad:
            parts.append("wrong shapes " + ", ".join(f"{k} {shapes[k]} (expected {expected[k]})" for k in bad[:4]))
        if extra:
            parts.append(f"unexpected {extra[:4]}")
        raise IntegrityError(f"{art.name}: {path} does not hold the expected tensors: {'; '.join(parts)}")
