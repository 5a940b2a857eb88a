"""The torchrun agent of a launch: ``python -m mixflow_bench.launch.torchrun_agent FAILURE_FILE TORCHRUN_ARGS...``.

It runs ``torch.distributed.run`` with the given arguments. When a rank fails, torchrun stops the others (SIGTERM)
and raises ``ChildFailedError``, whose report torchrun would print as a traceback; here the report goes to
``FAILURE_FILE`` (its first line a one-line summary naming each failed rank and how it ended) and the agent exits
with status 1, so that the launcher can tell the user in one line.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any


def _how(failure: Any) -> str:
    """How one rank ended: killed by a signal, stopped by torchrun, or exited with a status."""
    if failure.exitcode < 0:
        name = failure.signal_name()
        return "was stopped (SIGTERM)" if name == "SIGTERM" else f"was killed by {name}"
    return f"exited with status {failure.exitcode}"


def summary(failures: dict[int, Any]) -> str:
    """One line naming every failed rank, the likely cause first: a rank killed by a signal other than SIGTERM
    (torchrun sends SIGTERM to the ranks it stops), then by time of failure."""

    def order(item: tuple[int, Any]) -> tuple[int, float, int]:
        rank, f = item
        stopped = f.exitcode < 0 and f.signal_name() == "SIGTERM"
        return (int(stopped), f.timestamp, rank)

    return "; ".join(f"rank {rank} (pid {f.pid}) {_how(f)}" for rank, f in sorted(failures.items(), key=order))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 2:
        raise SystemExit("usage: python -m mixflow_bench.launch.torchrun_agent FAILURE_FILE TORCHRUN_ARGS...")
    failure_file = Path(argv[0])
    failure_file.unlink(missing_ok=True)
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    # its "sending SIGTERM" / "failed (exitcode ...)" lines say what the report says
    logging.getLogger("torch.distributed.elastic.multiprocessing.api").setLevel(logging.CRITICAL)
    try:
        run(parse_args(argv[1:]))
    except ChildFailedError as e:
        failure_file.parent.mkdir(parents=True, exist_ok=True)
        failure_file.write_text(summary(e.failures) + "\n\n" + e.format_msg() + "\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
