"""Training checkpoints on disk: atomic writes, a ``latest`` pointer, retention, and EMA export.

Layout under ``out_dir/checkpoints/``: ``step-0001000.pt`` files (complete or absent: each is written to a
hidden temporary name in the same directory, synced, then ``os.replace``-d into place) and a ``latest`` text
file naming the newest one (also replaced atomically). Everything stored is tensors and plain Python values,
so :func:`load_checkpoint` uses ``weights_only=True``.
"""

from __future__ import annotations

import os
import re
import shutil
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from mixflow_bench.atomic import atomic_write

CHECKPOINT_DIR = "checkpoints"
LATEST_POINTER = "latest"
_STEP_FILE = re.compile(r"^step-(\d{7,})\.pt$")


def checkpoint_dir(out_dir: str | os.PathLike[str]) -> Path:
    """``out_dir/checkpoints``."""
    return Path(out_dir) / CHECKPOINT_DIR


def checkpoint_name(step: int) -> str:
    """File name of the checkpoint after ``step`` optimizer steps: ``step-0001000.pt``."""
    return f"step-{step:07d}.pt"


def _atomic_write(path: Path, write: Any) -> None:
    atomic_write(path, write, durable=True)  # the rename itself survives a crash where the file system allows


class CheckpointSpaceError(OSError):
    """Not enough free disk space to write a checkpoint (said before writing, not as a torch.save failure)."""


def tensor_bytes(state: Any) -> int:
    """Bytes of every tensor in a nested state (the size of its ``torch.save`` file, give or take metadata)."""
    if isinstance(state, torch.Tensor):
        return state.numel() * state.element_size()
    if isinstance(state, Mapping):
        return sum(tensor_bytes(v) for v in state.values())
    if isinstance(state, (list, tuple)):
        return sum(tensor_bytes(v) for v in state)
    return 0


def save_checkpoint(path: str | os.PathLike[str], state: Mapping[str, Any]) -> Path:
    """Write ``state`` with ``torch.save`` atomically (temporary file in the same directory, then rename).

    The free space is checked first: a full disk otherwise surfaces as torch's "unexpected pos" error halfway
    through a multi-GB write (an SiT-XL/2 training checkpoint with EMA and AdamW states is 10.8 GB).
    """
    path = Path(path)
    need = tensor_bytes(state)
    free = shutil.disk_usage(path.parent if path.parent.exists() else Path.cwd()).free
    if need > free:
        raise CheckpointSpaceError(
            f"writing checkpoint {path} needs about {need / 1e9:.1f} GB but {free / 1e9:.1f} GB are free on "
            f"{path.parent}; free space there and rerun (training resumes from the last checkpoint)"
        )
    try:
        _atomic_write(path, lambda handle: torch.save(dict(state), handle))
    except RuntimeError as err:  # torch's zip writer reports a short write this way
        if "unexpected pos" in str(err):
            raise CheckpointSpaceError(f"writing checkpoint {path} failed part-way (disk full?): {err}") from err
        raise
    return path


def load_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if not is_complete_checkpoint(path):
        raise ValueError(f"checkpoint {path} is truncated or not a torch.save file")
    return torch.load(path, map_location=map_location, weights_only=True)


def is_complete_checkpoint(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is a whole ``torch.save`` archive (a truncated file lacks the zip directory)."""
    try:
        return zipfile.is_zipfile(path)
    except OSError:
        return False


def list_checkpoints(out_dir: str | os.PathLike[str]) -> list[tuple[int, Path]]:
    """``(step, path)`` of each ``step-*.pt`` in ``out_dir/checkpoints`` by step (temp files skipped)."""
    directory = checkpoint_dir(out_dir)
    if not directory.is_dir():
        return []
    found = []
    for entry in directory.iterdir():
        match = _STEP_FILE.match(entry.name)
        if match and entry.is_file():
            found.append((int(match.group(1)), entry))
    return sorted(found)


def write_latest_pointer(out_dir: str | os.PathLike[str], path: str | os.PathLike[str]) -> None:
    """Point ``out_dir/checkpoints/latest`` at the checkpoint file ``path`` (atomically)."""
    name = Path(path).name
    _atomic_write(checkpoint_dir(out_dir) / LATEST_POINTER, lambda handle: handle.write(f"{name}\n".encode()))


def latest_checkpoint(out_dir: str | os.PathLike[str]) -> Path | None:
    """The newest complete checkpoint under ``out_dir/checkpoints``, or None.

    The ``latest`` pointer is trusted when it names a complete ``step-*.pt`` file at least as new as any other
    complete one; otherwise the newest complete ``step-*.pt`` wins. Temporary and truncated files never do.
    """
    complete = [(step, path) for step, path in list_checkpoints(out_dir) if is_complete_checkpoint(path)]
    if not complete:
        return None
    pointer = checkpoint_dir(out_dir) / LATEST_POINTER
    if pointer.is_file():
        name = pointer.read_text().strip()
        for step, path in complete:
            if path.name == name and step == complete[-1][0]:
                return path
    return complete[-1][1]


def prune_checkpoints(out_dir: str | os.PathLike[str], keep_last: int, keep_every: int | None) -> list[Path]:
    """Delete ``step-*.pt`` files except the newest ``keep_last`` and those whose step is a multiple of
    ``keep_every``; returns the deleted paths."""
    if keep_last < 1:
        raise ValueError(f"keep_last must be at least 1, got {keep_last}")
    found = list_checkpoints(out_dir)
    keep = {path for _, path in found[-keep_last:]}
    if keep_every:
        keep |= {path for step, path in found if step % keep_every == 0}
    deleted = []
    for _, path in found:
        if path not in keep:
            path.unlink(missing_ok=True)
            deleted.append(path)
    return deleted


def export_ema(checkpoint: str | os.PathLike[str] | Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write the EMA weights of a training checkpoint as a raw state dict (what the zoo loads, strict)."""
    state = checkpoint if isinstance(checkpoint, Mapping) else load_checkpoint(checkpoint)
    if "ema" not in state:
        raise KeyError(f"checkpoint has no 'ema' entry (keys: {sorted(state)})")
    ema = {name: tensor.detach().cpu().clone() for name, tensor in state["ema"].items()}
    return save_checkpoint(path, ema)
