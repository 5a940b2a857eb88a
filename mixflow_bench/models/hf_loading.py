"""Loading Hugging Face weights (diffusers, transformers) strictly through the libraries' own loaders.

The libraries' ``from_pretrained`` convert the key names of older files to the names their installed version
uses (diffusers: the VAE's old attention names; transformers 5: DINOv2's ``attention.attention.query`` ->
``attention.q_proj``), but only warn about missing or unused tensors; :func:`check_loading_info` turns those
warnings into an error. :func:`hf_weights_folder` gives ``from_pretrained`` a folder for any of the ways the
weights arrive: a snapshot folder, one file in it (what a hub download returns), or a bare file.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def hf_weights_folder(
    path: Path, weights_name: str, write_config: Callable[[Path], None]
) -> Iterator[tuple[Path, bool | None]]:
    """A folder that ``from_pretrained`` can read for ``path``, and whether it must take the safetensors file.

    ``path`` is a Hugging Face snapshot folder (``config.json`` plus weights), one weights file inside such a
    folder (what a hub download returns), or a bare weights file. ``weights_name`` is the file name the loader
    looks for (``model.safetensors``; ``pytorch_model.bin`` is its pickle twin, as the hubs serve both). A file
    under another name, or without a ``config.json`` beside it, is linked into a temporary folder under that
    name, next to its own ``config.json`` or one written by ``write_config``.
    """
    if path.is_dir():
        if not (path / "config.json").exists():
            raise FileNotFoundError(f"{path}: no config.json in this weights folder")
        yield path, None
        return
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    safetensors = path.suffix == ".safetensors"
    stem = weights_name.rsplit(".", 1)[0]
    pickle_name = "pytorch_model.bin" if stem == "model" else f"{stem}.bin"
    if (path.parent / "config.json").exists() and path.name in (f"{stem}.safetensors", pickle_name):
        yield path.parent, safetensors
        return
    with tempfile.TemporaryDirectory(prefix="mixflow-weights-") as tmp:
        folder = Path(tmp)
        (folder / (f"{stem}.safetensors" if safetensors else pickle_name)).symlink_to(path.resolve())
        if (path.parent / "config.json").exists():
            (folder / "config.json").symlink_to((path.parent / "config.json").resolve())
        else:
            write_config(folder)
        yield folder, safetensors


def check_loading_info(info: dict[str, Any], source: Path, what: str) -> None:
    """Fail loudly unless a ``from_pretrained`` load used every tensor and filled every parameter."""
    problems = []
    for key in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs"):
        found = sorted(str(k) for k in (info.get(key) or []))
        if found:
            shown = ", ".join(found[:8]) + (f" ... ({len(found)} in all)" if len(found) > 8 else "")
            problems.append(f"{key.replace('_', ' ')}: {shown}")
    if problems:
        raise RuntimeError(f"{source}: the {what} weights do not fit the model ({'; '.join(problems)})")
