"""Artifact registry, cache and robust downloads (checkpoints, reference batches, weights, stats)."""

from mixflow_bench.hub.cache import HashLock, hub_home
from mixflow_bench.hub.checkpoint import load_state_dict
from mixflow_bench.hub.fetch import ArtifactStatus, OfflineError, fetch, status, verify_file
from mixflow_bench.hub.http import DownloadError, DownloadPolicy, IntegrityError
from mixflow_bench.hub.registry import (
    Artifact,
    HFSource,
    artifact_names,
    artifacts_for_recipe,
    get_artifact,
    registry,
    registry_overrides,
)

__all__ = [
    "Artifact",
    "ArtifactStatus",
    "DownloadError",
    "DownloadPolicy",
    "HFSource",
    "HashLock",
    "IntegrityError",
    "OfflineError",
    "artifact_names",
    "artifacts_for_recipe",
    "fetch",
    "get_artifact",
    "hub_home",
    "load_state_dict",
    "registry",
    "registry_overrides",
    "status",
    "verify_file",
]
