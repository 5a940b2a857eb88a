"""Artifact registry, cache and robust downloads (checkpoints, reference batches, weights, stats)."""

from mixflow_bench.hub.cache import HashLock, hub_home
from mixflow_bench.hub.fetch import ArtifactStatus, OfflineError, fetch, status, verify_file
from mixflow_bench.hub.http import DiskFullError, DownloadError, DownloadPolicy, IntegrityError
from mixflow_bench.hub.load import load_state_dict
from mixflow_bench.hub.offline import offline_mode, set_offline
from mixflow_bench.hub.registry import (
    Artifact,
    HFSource,
    artifact_names,
    get_artifact,
    integrity,
    registry,
    registry_overrides,
)

__all__ = [
    "Artifact",
    "ArtifactStatus",
    "DiskFullError",
    "DownloadError",
    "DownloadPolicy",
    "HFSource",
    "HashLock",
    "IntegrityError",
    "OfflineError",
    "artifact_names",
    "fetch",
    "get_artifact",
    "hub_home",
    "integrity",
    "load_state_dict",
    "offline_mode",
    "registry",
    "registry_overrides",
    "set_offline",
    "status",
    "verify_file",
]
