"""The benchmarks' stable timing (benchmarks/timing.py), driven by a fake clock: warm-up lasts until the step
time settles, the result is the median of repeat medians, and it does not depend on how long warm-up took."""

from __future__ import annotations

import importlib.util
import itertools
import sys
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "timing.py"
_spec = importlib.util.spec_from_file_location("bench_timing", _PATH)
timing = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = timing  # dataclasses look their module up
_spec.loader.exec_module(timing)


class FakeStep:
    """A step whose duration (on a fake clock) is the next value of ``durations``."""

    def __init__(self, durations):
        self.durations = iter(durations)
        self.now = 0.0
        self.calls = 0

    def clock(self) -> float:
        return self.now

    def __call__(self) -> None:
        self.now += next(self.durations)
        self.calls += 1


def settling_after(n_slow: int, settled: float = 1.0):
    """n_slow decreasing slow steps (compilation, autotuning), then a constant step time."""
    slow = [settled * (2.0 + n_slow - i) for i in range(n_slow)]
    return itertools.chain(slow, itertools.repeat(settled))


@pytest.mark.parametrize("n_slow", [1, 4, 15])
def test_warmup_lasts_until_the_step_time_settles(n_slow):
    step = FakeStep(settling_after(n_slow))
    policy = timing.TimingPolicy(window=3, tolerance=0.05, min_warmup=2, max_warmup=40, timed=20, repeats=3)
    result = timing.time_steps(step, policy, clock=step.clock)
    # the window of 3 equal times starts right after the last slow step
    assert result.settled
    assert result.warmup_steps == max(n_slow + 3, 4)
    assert result.median_s == 1.0 and result.min_s == 1.0 and result.max_s == 1.0 and result.spread == 0.0
    assert result.timed_steps == 60 and step.calls == result.warmup_steps + 60


def test_result_does_not_depend_on_the_length_of_warmup():
    """A fixed warm-up of 3 steps followed by a mean over the timed window would move with the slow phase."""
    policy = timing.TimingPolicy()
    results = []
    for n_slow in (2, 10, 25):
        step = FakeStep(settling_after(n_slow, settled=0.25))
        results.append(timing.time_steps(step, policy, clock=step.clock).median_s)
    assert results == [0.25, 0.25, 0.25]


def test_median_of_repeat_medians_and_spread():
    warm = [9.0, 1.0, 1.0, 1.0]  # settles at the 4th step
    block1 = [1.0] * 19 + [100.0]  # one outlier: the median ignores it
    block2 = [1.1] * 20
    block3 = [0.9] * 20
    step = FakeStep(warm + block1 + block2 + block3)
    result = timing.time_steps(step, timing.TimingPolicy(), clock=step.clock)
    assert result.warmup_steps == 4
    assert result.repeat_medians == pytest.approx((1.0, 1.1, 0.9))
    assert result.median_s == pytest.approx(1.0)
    assert (result.min_s, result.max_s) == pytest.approx((0.9, 1.1))
    assert result.spread == pytest.approx(0.2)
    assert result.as_dict()["spread"] == pytest.approx(0.2)


def test_a_step_that_never_settles_stops_at_the_cap_and_says_so():
    step = FakeStep(itertools.cycle([1.0, 2.0]))
    policy = timing.TimingPolicy(max_warmup=12, timed=4, repeats=3)
    result = timing.time_steps(step, policy, clock=step.clock)
    assert not result.settled and result.warmup_steps == 12
    assert result.timed_steps == 12


def test_warmup_time_cap():
    step = FakeStep(itertools.cycle([10.0, 30.0]))
    policy = timing.TimingPolicy(max_warmup=40, max_warmup_s=100.0, timed=2, repeats=1)
    result = timing.time_steps(step, policy, clock=step.clock)
    assert not result.settled and result.warmup_s >= 100.0 and result.warmup_steps == 6


def test_callback_driven_timing_stops_the_loop():
    settler = timing.Settler(timing.TimingPolicy(timed=5, repeats=2))
    step = FakeStep(settling_after(3, settled=0.5))
    callback = timing.step_callback(settler, clock=step.clock)
    with pytest.raises(timing.StopTiming):
        for _ in range(1000):  # a training loop calling back after each step
            step()
            callback({"step": step.calls})
    result = settler.result()
    assert result.median_s == 0.5 and result.timed_steps == 10 and result.settled
    assert step.calls == result.warmup_steps + 10


def test_deadline_ends_the_timing_with_its_progress():
    step = FakeStep(itertools.repeat(1.0))
    with pytest.raises(timing.DeadlineExceeded) as err:
        timing.time_steps(step, timing.TimingPolicy(), clock=step.clock, deadline=10.0)
    assert err.value.partial["settled"] and err.value.partial["timed_steps"] > 0
    assert step.calls == 11


def test_policy_rejects_impossible_settings():
    with pytest.raises(ValueError):
        timing.TimingPolicy(min_warmup=5, max_warmup=4)
    with pytest.raises(ValueError):
        timing.TimingPolicy(window=1)


def test_a_ratio_whose_range_spans_more_than_a_tenth_is_flagged() -> None:
    # 2.0x with repeats between 1.95x and 2.15x: the range spans exactly 10 % of the ratio, the limit itself
    assert timing.ratio_spread(2.0, (1.95, 2.15)) == pytest.approx(0.10)
    assert timing.ratio_is_stable(2.0, (1.95, 2.149))
    # the DiT^DH-XL training figure that moved between 1.48x and 2.27x across runs would be flagged in one run
    assert not timing.ratio_is_stable(1.85, (1.48, 2.27))
    assert timing.MAX_RATIO_SPREAD == 0.10

