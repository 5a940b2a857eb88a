"""Entry point of one torchrun process: ``python -m mixflow_bench.launch.worker TASK.json``."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from mixflow_bench.launch.tasks import Task

# What gloo and the c10d store say when the process at the other end of a connection has gone away.
LOST_PEER = ("Connection reset by peer", "Connection closed by peer", "Broken pipe")


def lost_peer(error: BaseException) -> bool:
    """Whether ``error`` is a collective or store call failing because another rank died (not a bug here)."""
    import torch.distributed as dist

    return isinstance(error, (RuntimeError, dist.DistError)) and any(s in str(error) for s in LOST_PEER)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        raise SystemExit("usage: python -m mixflow_bench.launch.worker TASK.json")
    try:
        Task.from_file(Path(argv[0])).run()
    except Exception as e:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1 and lost_peer(e):
            # a consequence: the rank that died is named by the launcher, this traceback would only hide it
            first = re.sub(r"^\[[^\]]*\]\s*", "", str(e).strip().splitlines()[0]).split(". ")[0]  # no source path
            raise SystemExit(f"[rank {os.environ.get('RANK', '?')}] lost another rank: {first[:200]}") from None
        raise


if __name__ == "__main__":
    main()
