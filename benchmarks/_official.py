"""Finding and importing the official SiT / REPA / RAE code for the benchmarks.

The checkouts live in ``tools/parity/_official/<NAME>`` (ignored by git; ``tools/parity/checkout_official.py``
makes them at the commits pinned in ``tools/parity/official.json``) or under another root given with
``--official-root``. Nothing of the official code is copied into this project: its folders are put on
``sys.path`` and imported as their own scripts import them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
PINS_FILE = ROOT / "tools" / "parity" / "official.json"
DEFAULT_OFFICIAL_ROOT = ROOT / "tools" / "parity" / "_official"
# the folder of each repository that its own scripts run from (and import from)
IMPORT_SUBDIR = {"SiT": "", "REPA": "", "RAE": "src"}
# modules each benchmark case imports from a checkout (a probe that it is present and importable)
PROBE_FILES = {"SiT": "transport/transport.py", "REPA": "samplers.py", "RAE": "src/stage2/models/DDT.py"}


def pins() -> dict[str, dict]:
    return json.loads(PINS_FILE.read_text())


def checkout_commit(root: Path) -> str | None:
    """The commit of a checkout: its ``COMMIT`` file (exports), else ``git rev-parse HEAD`` (clones)."""
    marker = root / "COMMIT"
    if marker.is_file():
        return marker.read_text().strip() or None
    if (root / ".git").exists():
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    return None


def present(name: str, base: Path = DEFAULT_OFFICIAL_ROOT) -> bool:
    return (Path(base) / name / PROBE_FILES[name]).is_file()


def peer(name: str, base: Path = DEFAULT_OFFICIAL_ROOT) -> dict:
    """What a benchmark row says about the official code it ran: repository, commit, and whether that is the pin."""
    pin = pins()[name]
    root = Path(base) / name
    commit = checkout_commit(root)
    return {
        "repo": pin["repo"],
        "commit": commit,
        "pinned_commit": pin["commit"],
        "at_pin": commit == pin["commit"],
        "checkout": str(root),
    }


def use_official(name: str, base: Path = DEFAULT_OFFICIAL_ROOT) -> Path:
    """Put the checkout's import folder first on ``sys.path``; returns the checkout's root."""
    root = Path(base) / name
    if not present(name, base):
        raise FileNotFoundError(
            f"official {name} code not found under {root} (run tools/parity/checkout_official.py, "
            "or pass --official-root)"
        )
    folder = str(root / IMPORT_SUBDIR[name]) if IMPORT_SUBDIR[name] else str(root)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    return root


@torch.no_grad()
def randomize_(module: nn.Module, keep: tuple[str, ...] = (), seed: int = 1234, std: float = 0.02) -> nn.Module:
    """Fill every trainable parameter (except those named in ``keep``) with N(0, std), drawn on its device.

    The official initialisations zero the adaLN and output layers, which would make every velocity zero and
    hand sparse data to the kernels; both sides of a comparison get the same random tensors.
    """
    generators: dict[torch.device, torch.Generator] = {}
    for name, p in module.named_parameters():
        if not p.requires_grad or any(name == k or name.endswith("." + k) for k in keep):
            continue
        gen = generators.setdefault(p.device, torch.Generator(device=p.device).manual_seed(seed))
        p.copy_(torch.randn(p.shape, generator=gen, device=p.device, dtype=p.dtype) * std)
    return module


def adopt(official: nn.Module, build: Callable[[], nn.Module], share: bool = True) -> nn.Module:
    """This project's module holding the official module's tensors (``strict``; shared, or copies)."""
    state = official.state_dict()
    if not share:
        state = {k: v.detach().clone() for k, v in state.items()}
    with torch.device("meta"):
        ours = build()
    ours.load_state_dict(state, strict=True, assign=True)
    return ours
