"""Entry point of one torchrun process: ``python -m mixflow_bench.launch.worker TASK.json``."""

from __future__ import annotations

import sys
from pathlib import Path

from mixflow_bench.launch.tasks import Task


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        raise SystemExit("usage: python -m mixflow_bench.launch.worker TASK.json")
    Task.from_file(Path(argv[0])).run()


if __name__ == "__main__":
    main()
