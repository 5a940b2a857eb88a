"""Stage manifests: a stage is done when its outputs exist and were made from the same inputs and settings.

A manifest (``<run>/manifests/<stage>.json``) records the sha256 of every input file, the stage settings and the
outputs. The stage's key is the sha256 of (settings, input hashes); a changed setting or input gives another key
and the stage runs again. Input hashes are cached by (size, mtime) in ``<run>/manifests/.hash-cache.json`` so
that multi-GB sample files are not re-read on every ``--plan``.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
from pathlib import Path
from typing import Any

from mixflow_bench.results.records import write_json_atomic


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


class HashCache:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.data: dict[str, Any] = json.loads(self.path.read_text()) if self.path.exists() else {}

    def sha256(self, file: Path) -> str:
        file = Path(file)
        st = file.stat()
        key = str(file.resolve())
        entry = self.data.get(key)
        if entry and entry["size"] == st.st_size and entry["mtime_ns"] == st.st_mtime_ns:
            return entry["sha256"]
        digest = sha256_file(file)
        self.data[key] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest}
        write_json_atomic(self.path, self.data)
        return digest


def stage_key(settings: dict[str, Any], input_hashes: dict[str, str | None]) -> str:
    blob = json.dumps({"settings": settings, "inputs": input_hashes}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def _diff(old: Any, new: Any, prefix: str = "") -> dict[str, tuple[Any, Any]]:
    """Leaf-by-leaf differences of two JSON-like values, keyed by dotted path."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: dict[str, tuple[Any, Any]] = {}
        for k in sorted(set(old) | set(new), key=str):
            out.update(_diff(old.get(k), new.get(k), f"{prefix}{k}."))
        return out
    old, new = json.loads(json.dumps(old, default=str)), json.loads(json.dumps(new, default=str))
    return {} if old == new else {prefix.rstrip("."): (old, new)}


class ManifestStore:
    """Reads and writes the manifests of one run directory."""

    def __init__(self, run_dir: Path):
        self.dir = Path(run_dir) / "manifests"
        self._cache: HashCache | None = None

    @property
    def cache(self) -> HashCache:
        if self._cache is None:
            self._cache = HashCache(self.dir / ".hash-cache.json")
        return self._cache

    def hash_inputs(self, inputs: dict[str, Path | None]) -> dict[str, str | None]:
        """sha256 of each input file; a missing input hashes to None (the stage then cannot be up to date)."""
        return {k: (self.cache.sha256(p) if p is not None and Path(p).exists() else None) for k, p in inputs.items()}

    def path(self, stage: str) -> Path:
        return self.dir / f"{stage}.json"

    def read(self, stage: str) -> dict[str, Any] | None:
        p = self.path(stage)
        return json.loads(p.read_text()) if p.exists() else None

    def status(
        self,
        stage: str,
        settings: dict[str, Any],
        inputs: dict[str, Path | None],
        outputs: list[Path],
        extendable: Any = None,
    ) -> str:
        """``done`` (skip), ``extend`` (finished work continues: ``extendable(old, new)`` and the same inputs),
        ``changed`` (ran before with other inputs/settings), ``missing`` (never ran / outputs gone) or
        ``blocked`` (an input does not exist yet)."""
        hashes = self.hash_inputs(inputs)
        if any(v is None for v in hashes.values()):
            return "blocked"
        manifest = self.read(stage)
        if manifest is None or not all(Path(o).exists() for o in outputs):
            return "missing"
        if manifest.get("key") == stage_key(settings, hashes):
            return "done"
        same_inputs = {k: v.get("sha256") for k, v in manifest.get("inputs", {}).items()} == hashes
        if extendable is not None and same_inputs and extendable(manifest.get("settings", {}), settings):
            return "extend"
        return "changed"

    def changes(self, stage: str, settings: dict[str, Any], inputs: dict[str, Path | None]) -> list[str]:
        """What differs from the stage's last finished run, as ``key.path: old -> new`` lines."""
        manifest = self.read(stage) or {}
        lines = [f"{k}: {a!r} -> {b!r}" for k, (a, b) in _diff(manifest.get("settings", {}), settings).items()]
        hashes = self.hash_inputs(inputs)
        for k, v in manifest.get("inputs", {}).items():
            if hashes.get(k) != v.get("sha256"):
                lines.append(f"input {k} ({v.get('path')}) changed")
        return lines

    def write(self, stage: str, settings: dict[str, Any], inputs: dict[str, Path | None], outputs: list[Path]) -> None:
        hashes = self.hash_inputs(inputs)
        write_json_atomic(
            self.path(stage),
            {
                "stage": stage,
                "key": stage_key(settings, hashes),
                "settings": settings,
                "inputs": {k: {"path": str(inputs[k]), "sha256": v} for k, v in hashes.items()},
                "outputs": [str(o) for o in outputs],
                "completed": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            },
        )
