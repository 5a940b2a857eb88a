"""What an evaluation is given, turned into files: npz paths, folders of PNG/JPEG images, artifact names.

A folder of samples is packed into a temporary npz for the run. A folder of reference images is packed once
into the statistics cache under a name derived from its content (file names, sizes and bytes), so its
statistics, cached by the npz's sha256, are computed once for the same images wherever the folder lives.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mixflow_bench.metrics.options import EvalOptions

REFERENCE_KINDS = ("reference-batch",)
WEIGHT_SUFFIXES = (".pt", ".pth", ".pkl", ".bin", ".safetensors")


def weights_file(spec: str | os.PathLike | None) -> str | None:
    """A weights option as a file: None (the evaluator's default), a path (checked where it is loaded), or an
    artifact name fetched through the hub."""
    if spec is None:
        return None
    spec = str(spec)
    if Path(spec).exists() or os.sep in spec or spec.endswith(WEIGHT_SUFFIXES):
        return spec
    from mixflow_bench.hub import fetch, registry

    if spec not in registry():
        return spec  # not an artifact: the loader names the missing file
    return str(fetch(spec, progress=False))


def resolve_reference(ref: str | os.PathLike) -> Path:
    """A path (npz or folder of images), or the name of a reference-batch artifact (``adm-ref-imagenet256``)
    fetched through the hub; other artifacts (checkpoints, weights) are refused before any download.
    Raises ValueError with one line."""
    ref = str(ref)
    p = Path(ref)
    if p.exists() or ref.endswith(".npz") or os.sep in ref:
        if not p.exists():
            raise ValueError(f"reference file not found: {ref}")
        return p
    from mixflow_bench.hub import fetch, registry

    known = registry()
    batches = sorted(n for n, a in known.items() if a.kind in REFERENCE_KINDS)
    if ref not in known:
        raise ValueError(
            f"--ref {ref!r} is neither a file nor a reference batch; reference batches: {', '.join(batches)}"
        )
    if known[ref].kind not in REFERENCE_KINDS:
        raise ValueError(
            f"--ref {ref!r} is a {known[ref].kind}, not a reference batch; use one of {', '.join(batches)} "
            "or the path of a reference npz"
        )
    try:
        return Path(fetch(ref))
    except KeyError as exc:
        raise ValueError(f"--ref {ref!r}: {exc.args[0]}") from exc
    except (OSError, RuntimeError) as exc:
        raise ValueError(f"--ref {ref!r}: {exc}") from exc


def folder_key(folder: str | os.PathLike) -> str:
    """sha256 of a folder's images: their names, sizes and bytes, in sorted order."""
    from mixflow_bench.metrics.pack import list_images

    h = hashlib.sha256()
    for path in list_images(folder):
        h.update(f"{path.name}\0{path.stat().st_size}\0".encode())
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
    return h.hexdigest()


def packed_reference(folder: Path, cache_dir: Path | None = None, show_progress: bool = False) -> Path:
    """The cached npz of the reference images in ``folder`` (packed on first use)."""
    from mixflow_bench.metrics.pack import list_images, pack_folder
    from mixflow_bench.metrics.reference import default_cache_dir
    from mixflow_bench.progress import progress_bar

    out = (cache_dir or default_cache_dir()) / "folders" / f"{folder_key(folder)}.npz"
    if not out.is_file():
        with progress_bar("packing reference images", show_progress, total=len(list_images(folder))) as bar:
            pack_folder(folder, out, progress=bar)
    return out


@contextlib.contextmanager
def image_inputs(
    samples: str | os.PathLike, reference: str | os.PathLike, opts: EvalOptions
) -> Iterator[tuple[Path, Path]]:
    """(samples npz, reference npz) for an evaluation; a folder of samples is packed for the run only."""
    from mixflow_bench.metrics.pack import list_images, pack_folder
    from mixflow_bench.metrics.reference import default_cache_dir
    from mixflow_bench.progress import progress_bar

    ref = resolve_reference(reference)
    if ref.is_dir():
        ref = packed_reference(ref, opts.cache_dir, opts.show_progress)
    samples = Path(samples)
    if not samples.is_dir():
        yield samples, ref
        return
    root = opts.cache_dir or default_cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="samples-", dir=root) as tmp:
        packed = Path(tmp) / f"{samples.name or 'samples'}.npz"
        with progress_bar("packing samples", opts.show_progress, total=len(list_images(samples))) as bar:
            pack_folder(samples, packed, progress=bar)
        yield packed, ref
