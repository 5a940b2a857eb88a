"""Progress that reaches log files: plain lines at intervals where stdout is not a terminal, with honest rates.

The rate tests use a fake clock: 4 images in 75 s is 0.0533 img/s, however the updates fall; the rate over the last
update alone (what the bar showed before: ~37,000 img/s when two updates came a millisecond apart) fails them.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from rich.console import Console

from mixflow_bench import progress as progress_mod
from mixflow_bench.progress import LogProgress, RateColumn, TerminalProgress


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_bar_rate_is_the_average_since_the_start_not_the_last_update():
    clock = Clock()
    bar = TerminalProgress(RateColumn(), get_time=clock, console=Console(file=io.StringIO()), auto_refresh=False)
    task = bar.add_task("sampling", total=4)
    clock.now += 74.999
    bar.advance(task, 2)
    clock.now += 0.001  # two updates a millisecond apart, after 75 s of work
    bar.advance(task, 2)
    text = RateColumn().render(bar.tasks[0]).plain
    assert text == "0.0533 img/s", text


def test_bar_rate_counts_from_where_a_resumed_task_started():
    clock = Clock()
    bar = TerminalProgress(RateColumn(), get_time=clock, console=Console(file=io.StringIO()), auto_refresh=False)
    task = bar.add_task("sampling", total=1000, completed=900)  # 900 images were done by an earlier run
    clock.now += 10
    bar.advance(task, 50)
    assert RateColumn().render(bar.tasks[0]).plain == "5.0 img/s"


def test_log_lines_at_intervals_with_done_total_rate_and_eta(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(progress_mod.time, "monotonic", clock)
    out = io.StringIO()
    log = LogProgress(Console(file=out, width=200), interval_s=30)
    with log:
        task = log.add_task("sampling", total=100)
        for _ in range(99):  # one image a second: a line every 30 s, not one per update
            clock.now += 1
            log.advance(task, 1)
        clock.now += 1
        log.advance(task, 1)
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert lines[0] == "sampling: started, 0/100 img (0%), -- img/s, elapsed 0:00:00, ETA ?"
    assert lines[1] == "sampling: 30/100 img (30%), 1.0 img/s, elapsed 0:00:30, ETA 0:01:10"
    assert len(lines) == 5 and lines[-1] == "sampling: done, 100/100 img (100%), 1.0 img/s, elapsed 0:01:40"


def test_log_rate_for_slow_work_is_not_rounded_to_zero(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(progress_mod.time, "monotonic", clock)
    log = LogProgress(Console(file=io.StringIO()), interval_s=30)
    task = log.add_task("sampling", total=8)
    clock.now += 75
    log.update(task, advance=4)
    assert "4/8 img (50%), 0.0533 img/s" in log.line(task) and "ETA 0:01:15" in log.line(task)


@pytest.mark.timeout(300)
def test_redirected_reproduce_logs_progress_within_30_s_of_each_stage(tmp_path):
    """``mixflow-bench reproduce tiny-digits > log``: each stage's first line is followed by another line (its
    progress, or the next stage) within 30 s, and the training and sampling progress lines are there."""
    env = {**os.environ, "MIXFLOW_BENCH_HOME": str(tmp_path / "home")}
    env.pop("COLUMNS", None)
    cmd = [sys.executable, "-m", "mixflow_bench", "reproduce", "tiny-digits", "--run-dir", str(tmp_path / "run"),
           "train.steps=10", "sample.num=16", "sample.steps=4"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    lines: list[tuple[float, str]] = []
    reader = threading.Thread(target=lambda: lines.extend((time.monotonic(), ln) for ln in proc.stdout))
    reader.start()
    stderr = proc.stderr.read()
    assert proc.wait(timeout=280) == 0, stderr
    reader.join()
    text = "".join(line for _, line in lines)
    assert "\r" not in text
    assert any(line.startswith("train: done, 10/10 steps") for _, line in lines), text
    assert any(line.startswith("sampling (rank 0/1): done, 16/16 img") for _, line in lines), text
    starts = [i for i, (_, line) in enumerate(lines) if line.startswith("▶ ")]
    assert len(starts) == 5, text
    for i in starts:
        assert lines[i + 1][0] - lines[i][0] < 30, (lines[i], lines[i + 1])
    assert not Path(tmp_path / "run" / "train" / "log.jsonl").read_text().count("\r")
