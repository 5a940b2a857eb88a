"""A local stand-in for the artifact hosts: Hugging Face paths with sha256 ETags, and plain file hosts.

The rehearsal serves every artifact of a recipe from 127.0.0.1 and points the real downloader at it the way a
user points it at a mirror: ``HF_ENDPOINT`` for Hugging Face files and a registry-overrides file
(``MIXFLOW_BENCH_REGISTRY_OVERRIDES``) for direct URLs. Nothing in the download path is replaced.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from mixflow_bench.hub.registry import OVERRIDES_ENV, get_artifact
from mixflow_bench.hub.testserver import FaultyServer, ServedFile

REHEARSAL_COMMIT = "5eed" * 10  # the commit id the fake Hugging Face host reports


class ArtifactSite:
    """A running local host for artifacts: ``with ArtifactSite() as site: site.publish(name, files)``."""

    def __init__(self) -> None:
        self.server = FaultyServer()
        self.overrides: dict[str, dict[str, object]] = {}
        self.published: dict[str, dict[str, str]] = {}  # artifact -> {file: sha256}

    def __enter__(self) -> ArtifactSite:
        self.server.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.__exit__(*exc)

    def publish(self, name: str, files: dict[str, bytes]) -> None:
        """Serve artifact ``name``'s ``files`` where the registry says its host keeps them.

        For a Hugging Face artifact, ``files`` are keyed by the file name in the repository folder of the
        registry's file (the weights and their companions); for a direct-URL artifact, by its cache file name.
        """
        art = get_artifact(name)
        shas = {}
        if art.hf is not None:
            folder = art.hf.filename.rsplit("/", 1)[0] + "/" if "/" in art.hf.filename else ""
            for file, data in files.items():
                sha = hashlib.sha256(data).hexdigest()
                shas[file] = sha
                for revision in {art.hf.revision, "main", REHEARSAL_COMMIT}:
                    path = f"/{art.hf.repo_id}/resolve/{revision}/{folder}{file}"
                    headers = {"X-Repo-Commit": REHEARSAL_COMMIT, "X-Linked-Size": str(len(data))}
                    if not file.endswith((".json", ".txt", ".md")):  # LFS files (weights, archives, .ckpt)
                        headers["X-Linked-Etag"] = f'"{sha}"'
                    self.server.files[path] = ServedFile(data, etag=f'"{sha}"', headers=headers)
        else:
            (file, data), = files.items()
            sha = hashlib.sha256(data).hexdigest()
            shas[file] = sha
            path = f"/files/{name}/{file}"
            self.server.files[path] = ServedFile(data, etag=f'"{sha}"')
            self.overrides[name] = {"urls": [self.server.url(path)]}
            # a pinned hash names the real file: the fabricated stand-in's replaces it (listed in the report)
            if art.sha256 is not None:
                self.overrides[name]["sha256"] = sha
            if art.sha256_prefix is not None:
                self.overrides[name]["sha256_prefix"] = sha[: len(art.sha256_prefix)]
        self.published[name] = shas

    def environment(self, workdir: Path) -> dict[str, str]:
        """Environment variables that point the downloader at this host, with caches under ``workdir``."""
        overrides = Path(workdir) / "registry-overrides.json"
        overrides.write_text(json.dumps(self.overrides, indent=2))
        return {
            "HF_ENDPOINT": self.server.url(""),
            OVERRIDES_ENV: str(overrides),
            "MIXFLOW_BENCH_HOME": str(Path(workdir) / "home"),
            "HF_HUB_CACHE": str(Path(workdir) / "hf"),
            "HF_HUB_DISABLE_TELEMETRY": "1",
        }


__all__ = ["REHEARSAL_COMMIT", "ArtifactSite"]
