"""Image sources: a class-folder tree (ImageNet ``train/``) or tar shards of the same (WebDataset style).

Every source yields the same thing: an ordered list of :class:`ImageRecord` (key, label, byte reader)
and the class list. Labels are indices into the *sorted* class-folder names (torchvision ``ImageFolder``
order, which is the synset order of ImageNet checkpoints). Records are ordered by (class, relative path) so a
tar source holding the same files as a folder source enumerates them identically.

Tar members are found either as ``<class>/<name>.<ext>`` (class folder in the member path) or as
``<key>.<ext>`` + ``<key>.cls`` (integer label, WebDataset convention). Tar files are indexed once
(header scan) and read by offset, so any record can be read without streaming the archive.
"""

from __future__ import annotations

import os
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".gif")


@dataclass(frozen=True)
class ImageRecord:
    """One image of a source: a stable key (relative path), its label and a reader for its encoded bytes."""

    key: str
    label: int
    read: Callable[[], bytes]
    origin: str  # full path (folder) or "<tar>:<member>" (tar), for error messages


@dataclass(frozen=True)
class ImageSource:
    """An ordered, labelled image collection."""

    path: str
    kind: str  # "folder" | "tar"
    classes: list[str]
    records: list[ImageRecord]

    def __len__(self) -> int:
        return len(self.records)


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def _file_reader(path: str) -> Callable[[], bytes]:
    def read() -> bytes:
        with open(path, "rb") as fh:
            return fh.read()

    return read


def _tar_reader(tar_path: str, offset: int, size: int) -> Callable[[], bytes]:
    def read() -> bytes:
        with open(tar_path, "rb") as fh:
            fh.seek(offset)
            data = fh.read(size)
        if len(data) != size:
            raise OSError(f"{tar_path}: member at byte {offset} is truncated ({len(data)} of {size} bytes)")
        return data

    return read


def open_folder(root: str | os.PathLike) -> ImageSource:
    """A class-folder tree: ``root/<class>/**/<image>``; classes are the sorted top-level folder names."""
    root = str(root)
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    if not classes:
        raise ValueError(f"{root}: no class sub-folders found (expected root/<class>/<image files>)")
    records: list[ImageRecord] = []
    for label, cls in enumerate(classes):
        found = []
        for dirpath, dirnames, filenames in os.walk(os.path.join(root, cls), followlinks=True):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in filenames:
                if _is_image(name) and not name.startswith("."):
                    found.append(os.path.relpath(os.path.join(dirpath, name), root).replace(os.sep, "/"))
        for rel in sorted(found):
            full = os.path.join(root, rel)
            records.append(ImageRecord(rel, label, _file_reader(full), full))
    if not records:
        raise ValueError(f"{root}: class folders hold no image files ({', '.join(IMAGE_EXTENSIONS)})")
    return ImageSource(root, "folder", classes, records)


def _tar_files(path: str) -> list[str]:
    if os.path.isfile(path):
        return [path]
    tars = sorted(str(p) for p in Path(path).rglob("*.tar"))
    if not tars:
        raise ValueError(f"{path}: no .tar shards found")
    return tars


def open_tars(path: str | os.PathLike) -> ImageSource:
    """Tar shard(s): one ``.tar`` file or a folder of them; see the module docstring for member layouts."""
    path = str(path)
    by_folder: list[tuple[str, str, str, int, int]] = []  # (class, key, tar, offset, size)
    by_cls: dict[tuple[str, str], dict[str, tuple[int, int]]] = {}
    cls_values: dict[tuple[str, str], int] = {}
    for tar_path in _tar_files(path):
        with tarfile.open(tar_path, "r:") as tf:
            for m in tf.getmembers():
                if not m.isfile():
                    continue
                name = m.name.lstrip("./")
                stem, ext = os.path.splitext(name)
                if ext.lower() == ".cls":
                    raw = tf.extractfile(m).read().decode().strip()
                    try:
                        cls_values[(tar_path, stem)] = int(raw)
                    except ValueError as exc:
                        raise ValueError(f"{tar_path}:{name}: label {raw!r} is not an integer") from exc
                elif _is_image(name):
                    if "/" in name:
                        by_folder.append((name.split("/")[0], name, tar_path, m.offset_data, m.size))
                    else:
                        by_cls.setdefault((tar_path, stem), {})[name] = (m.offset_data, m.size)
    if by_folder and by_cls:
        raise ValueError(f"{path}: tar members mix class-folder paths and <key>.cls labels; use one layout")
    if by_folder:
        classes = sorted({c for c, *_ in by_folder})
        index = {c: i for i, c in enumerate(classes)}
        rows = sorted(by_folder, key=lambda r: (index[r[0]], r[1]))
        records = [
            ImageRecord(key, index[c], _tar_reader(t, off, size), f"{t}:{key}")
            for c, key, t, off, size in rows
        ]
        return ImageSource(path, "tar", classes, records)
    if not by_cls:
        raise ValueError(f"{path}: tar shards hold no image members")
    missing = [f"{t}:{k}" for (t, k) in by_cls if (t, k) not in cls_values]
    if missing:
        raise ValueError(f"{len(missing)} image(s) have no .cls label, e.g. {missing[0]}")
    n_classes = max(cls_values[k] for k in by_cls) + 1
    classes = [str(i) for i in range(n_classes)]
    rows = []
    for (t, stem), members in by_cls.items():
        for name, (off, size) in members.items():
            rows.append((cls_values[(t, stem)], name, t, off, size))
    rows.sort(key=lambda r: (r[0], r[1], r[2]))
    records = [ImageRecord(n, lab, _tar_reader(t, off, size), f"{t}:{n}") for lab, n, t, off, size in rows]
    return ImageSource(path, "tar", classes, records)


def open_source(path: str | os.PathLike) -> ImageSource:
    """Open a class-folder tree, a ``.tar`` file, or a folder of ``.tar`` shards."""
    path = str(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"source {path} does not exist")
    if os.path.isfile(path):
        if not path.endswith(".tar"):
            raise ValueError(f"source {path} is a file but not a .tar archive")
        return open_tars(path)
    has_dirs = any(e.is_dir() and not e.name.startswith(".") for e in os.scandir(path))
    if not has_dirs and any(e.name.endswith(".tar") for e in os.scandir(path)):
        return open_tars(path)
    return open_folder(path)
