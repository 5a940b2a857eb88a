"""A unit of work that any launcher can run: a task kind plus JSON-serialisable arguments.

Tasks travel as JSON (to torchrun workers) or pickled (to Slurm through submitit), so they hold no live objects.
Each kind names a function ``fn(**args)`` that reads ``RANK``/``WORLD_SIZE`` itself and resumes from what an
earlier, interrupted run of the same task left behind.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mixflow_bench.errors import UserError


class LaunchError(UserError, RuntimeError):
    """A launched task that did not finish (failed, cancelled, timed out, or lost); the message names the job
    and its log."""


# kind -> "module:function"
TASKS: dict[str, str] = {
    "sample": "mixflow_bench.pipeline.tasks:sample_task",
    "train": "mixflow_bench.pipeline.tasks:train_task",
    "eval": "mixflow_bench.pipeline.tasks:eval_task",
    "sleep": "mixflow_bench.pipeline.tasks:sleep_task",
}


@dataclass
class Task:
    kind: str
    args: dict[str, Any] = field(default_factory=dict)
    name: str = ""

    def __post_init__(self) -> None:
        if self.kind not in TASKS:
            raise ValueError(f"unknown task kind {self.kind!r} (known: {', '.join(sorted(TASKS))})")
        self.name = self.name or self.kind

    def run(self) -> Any:
        module, func = TASKS[self.kind].split(":")
        return getattr(importlib.import_module(module), func)(**self.args)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, default=str)

    @classmethod
    def from_json(cls, text: str) -> Task:
        return cls(**json.loads(text))

    @classmethod
    def from_file(cls, path: Path) -> Task:
        return cls.from_json(Path(path).read_text())
