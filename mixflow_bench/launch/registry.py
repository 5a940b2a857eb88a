"""The run directory's job registry (``jobs.json``) and Slurm job states from squeue / sacct / result files."""

from __future__ import annotations

import datetime as _dt
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

from filelock import FileLock

from mixflow_bench.results.records import write_json_atomic


def slurm_state(job_id: str) -> str:
    """The job's state from ``squeue`` (queued/running), else ``sacct``, else ``UNKNOWN``."""
    for command in (
        ["squeue", "-h", "-j", job_id, "-o", "%T"],
        ["sacct", "-n", "-X", "-P", "-j", job_id, "-o", "State"],
    ):
        state = _first_word(command)
        if state:
            return state
    return "UNKNOWN"


def _first_word(command: list[str]) -> str | None:
    """The first word a Slurm query prints, or None when the tool is missing, fails or prints nothing."""
    if not shutil.which(command[0]):
        return None
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    words = out.stdout.split() if out.returncode == 0 else []
    return words[0] if words else None


def result_state(folder: Path, job_id: str) -> str | None:
    """COMPLETED / FAILED from submitit's result pickle, or None when there is none yet."""
    pickle = Path(folder) / f"{job_id}_0_result.pkl"
    if not pickle.exists():
        return None
    import pickle as _pickle

    try:
        with open(pickle, "rb") as f:
            outcome = _pickle.load(f)[0]
    except Exception:  # noqa: BLE001 - a half-written pickle reads as unknown
        return None
    return "COMPLETED" if outcome == "success" else "FAILED"


class JobRegistry:
    """``<dir>/jobs.json``: one entry per submitted job (id, name, stage, folder, logs, submitted)."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.path = self.directory / "jobs.json"

    def read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return json.loads(self.path.read_text())

    def add(self, **entry: Any) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        entry.setdefault("submitted", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
        with FileLock(str(self.path) + ".lock"):
            jobs = self.read()
            jobs.append(entry)
            write_json_atomic(self.path, jobs)

    def with_states(self) -> list[dict[str, Any]]:
        """The entries, each with ``state`` (live from Slurm, else from the result file)."""
        out = []
        for job in self.read():
            state = slurm_state(job["job_id"])
            if state == "UNKNOWN":
                state = result_state(Path(job["folder"]), job["job_id"]) or state
            out.append({**job, "state": state})
        return out


def find_registries(root: Path) -> list[JobRegistry]:
    """Every job registry below ``root``."""
    root = Path(root)
    if not root.exists():
        return []
    return [JobRegistry(p.parent) for p in sorted(root.rglob("jobs.json"))]
