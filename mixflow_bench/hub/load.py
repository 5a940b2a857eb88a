"""Loading a state dict by artifact name (fetched and verified first) or from a file."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from mixflow_bench.hub.checkpoint import read_state_dict
from mixflow_bench.hub.fetch import fetch, verify_file
from mixflow_bench.hub.registry import get_artifact, registry

if TYPE_CHECKING:
    import torch
    from torch import Tensor


def load_state_dict(
    path_or_name: str | Path,
    *,
    map_location: str | torch.device = "cpu",
    unwrap: tuple[str, ...] = ("ema",),
    artifact: str | None = None,
    mmap: bool = False,
    layout: str | None = None,
    which: str = "ema",
) -> dict[str, Tensor]:
    """A flat ``{name: Tensor}`` state dict from an artifact name or a file (:func:`read_state_dict` reads it).

    An artifact name is fetched and verified first; ``artifact=`` checks a plain path against that registry entry.
    ``layout`` defaults to the artifact's (``plain`` for a file of no artifact).
    """
    name = path_or_name if isinstance(path_or_name, str) and path_or_name in registry() else None
    if name is not None:
        path = fetch(name)
    else:
        path = Path(path_or_name)
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist and is not an artifact name")
        if artifact is not None:
            verify_file(get_artifact(artifact), path)
    if layout is None:
        layout = registry()[name or artifact].layout if (name or artifact) else "plain"
    return read_state_dict(path, map_location=map_location, unwrap=unwrap, mmap=mmap, layout=layout, which=which)
