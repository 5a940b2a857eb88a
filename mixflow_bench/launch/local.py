"""Run a task in this process."""

from __future__ import annotations

from typing import Any

from mixflow_bench.launch.tasks import Task


class LocalLauncher:
    name = "local"

    def run(self, task: Task) -> Any:
        return task.run()
