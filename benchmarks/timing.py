"""Stable per-step timing for the benchmarks.

A step (a sampler call of a few steps, or one training step) is run until its time settles: compilation,
autotuning and the caching allocator make the first steps slow, so the warm-up goes on until the last
``window`` step times lie within ``tolerance`` of each other (relative range, ``(max - min) / min``), with a cap
on the number of warm-up steps and on their time. Then ``repeats`` blocks of ``timed`` steps are timed one step
at a time; the result is the median of the block medians, and the spread is the range of the block medians.
Every step ends with a device synchronisation (``torch.cuda.synchronize``), so a step's time is wall time of
finished work. Because warm-up only ends once the times have settled, the result does not depend on how many
steps a run asks for.

:class:`Settler` is the state machine (fed one duration at a time, so it can also be driven from a callback,
e.g. a training loop's per-step log); :func:`time_steps` drives it by calling a function.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch


@dataclass(frozen=True)
class TimingPolicy:
    """How long to warm up and how much to time."""

    window: int = 3  # settled when the last `window` warm-up step times ...
    tolerance: float = 0.05  # ... have a relative range (max - min) / min of at most this
    min_warmup: int = 2  # warm-up steps always discarded (the first one holds compilation)
    max_warmup: int = 40  # cap on warm-up steps; a run that reaches it is reported as not settled
    max_warmup_s: float = 240.0  # cap on warm-up time
    timed: int = 20  # timed steps per repeat
    repeats: int = 3

    def __post_init__(self) -> None:
        if self.window < 2 or self.timed < 1 or self.repeats < 1 or self.tolerance < 0:
            raise ValueError(f"invalid timing policy {self}")
        if self.max_warmup < max(self.min_warmup, 1):
            raise ValueError(f"max_warmup {self.max_warmup} is below min_warmup {self.min_warmup}")


DEFAULT_POLICY = TimingPolicy()
# A smoke run on a CPU: the same machinery with few steps; its numbers are not measurements.
QUICK_POLICY = TimingPolicy(window=2, tolerance=10.0, min_warmup=1, max_warmup=3, max_warmup_s=30.0, timed=2, repeats=2)


@dataclass(frozen=True)
class Timing:
    """The settled time of one step: median of the repeat medians, and the range of those medians."""

    median_s: float
    min_s: float  # fastest repeat median
    max_s: float  # slowest repeat median
    repeat_medians: tuple[float, ...]
    warmup_steps: int
    warmup_s: float
    settled: bool  # False when the warm-up stopped at its cap
    timed_steps: int
    policy: TimingPolicy = field(default=DEFAULT_POLICY)

    @property
    def spread(self) -> float:
        """Relative range of the repeat medians, (max - min) / median."""
        return (self.max_s - self.min_s) / self.median_s if self.median_s > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["repeat_medians"] = list(self.repeat_medians)
        out["spread"] = self.spread
        return out


class DeadlineExceeded(RuntimeError):
    """The run's time budget ran out before the timing finished; ``partial`` says how far it got."""

    def __init__(self, partial: dict[str, Any]):
        super().__init__(f"time budget exhausted during timing ({partial})")
        self.partial = partial


class Settler:
    """Feed step durations with :meth:`add`; it returns True once warm-up and all timed repeats are done."""

    def __init__(self, policy: TimingPolicy = DEFAULT_POLICY):
        self.policy = policy
        self.warmup: list[float] = []
        self.blocks: list[list[float]] = []
        self.settled = False
        self.done = False

    @property
    def warming_up(self) -> bool:
        return not self.blocks

    def _warmup_over(self) -> bool:
        p, w = self.policy, self.warmup
        n = len(w)
        # the first step never enters the window: it holds compilation and first-call set-up
        if n >= max(p.min_warmup, p.window + 1):
            last = w[-p.window :]
            if min(last) > 0 and (max(last) - min(last)) / min(last) <= p.tolerance:
                self.settled = True
                return True
        return n >= p.max_warmup or sum(w) >= p.max_warmup_s

    def add(self, seconds: float) -> bool:
        if self.done:
            raise RuntimeError("timing already finished")
        if self.warming_up:
            self.warmup.append(float(seconds))
            if self._warmup_over():
                self.blocks.append([])
            return False
        block = self.blocks[-1]
        block.append(float(seconds))
        if len(block) == self.policy.timed:
            if len(self.blocks) == self.policy.repeats:
                self.done = True
                return True
            self.blocks.append([])
        return False

    def progress(self) -> dict[str, Any]:
        return {
            "warmup_steps": len(self.warmup),
            "settled": self.settled,
            "timed_steps": sum(len(b) for b in self.blocks),
            "last_step_s": (self.blocks[-1][-1] if self.blocks and self.blocks[-1] else None)
            or (self.warmup[-1] if self.warmup else None),
        }

    def result(self) -> Timing:
        if not self.done:
            raise RuntimeError("timing not finished")
        medians = tuple(statistics.median(b) for b in self.blocks)
        return Timing(
            median_s=statistics.median(medians),
            min_s=min(medians),
            max_s=max(medians),
            repeat_medians=medians,
            warmup_steps=len(self.warmup),
            warmup_s=sum(self.warmup),
            settled=self.settled,
            timed_steps=sum(len(b) for b in self.blocks),
            policy=self.policy,
        )


def device_sync(device: torch.device | str | None) -> Callable[[], None]:
    """A function that waits for the device's queued work (a no-op off CUDA)."""
    if device is not None and torch.device(device).type == "cuda":
        return torch.cuda.synchronize
    return lambda: None


def time_steps(
    step: Callable[[], object],
    policy: TimingPolicy = DEFAULT_POLICY,
    *,
    device: torch.device | str | None = None,
    clock: Callable[[], float] = time.perf_counter,
    deadline: float | None = None,
) -> Timing:
    """Time ``step()`` as the module docstring says; ``deadline`` is a ``clock()`` value that ends the run
    with :class:`DeadlineExceeded` when passed."""
    sync = device_sync(device)
    settler = Settler(policy)
    sync()
    while True:
        start = clock()
        step()
        sync()
        now = clock()
        if settler.add(now - start):
            return settler.result()
        if deadline is not None and now > deadline:
            raise DeadlineExceeded(settler.progress())


class StopTiming(Exception):
    """Raised from a per-step callback once the timing is finished, to leave the loop that calls it."""


def step_callback(
    settler: Settler, clock: Callable[[], float] = time.perf_counter, deadline: float | None = None
) -> Callable[..., None]:
    """A callback for a loop that calls it once per finished (synchronised) step: it times the interval since
    its previous call (the first since its creation) and raises :class:`StopTiming` once ``settler`` is done."""
    last = [clock()]

    def callback(*_args, **_kwargs) -> None:
        now = clock()
        done = settler.add(now - last[0])
        last[0] = now
        if done:
            raise StopTiming
        if deadline is not None and now > deadline:
            raise DeadlineExceeded(settler.progress())

    return callback


# A ratio whose range over the repeats spans more than this fraction of its median is not quoted as a figure
# without saying so (benchmarks/README.md): a row carries ``ratio_stable: false`` and the log says why.
MAX_RATIO_SPREAD = 0.10


def ratio_spread(ratio: float, ratio_range: tuple[float, float] | list[float]) -> float:
    """Relative range of a speed ratio, ``(high - low) / ratio`` (0 for a non-positive ratio)."""
    lo, hi = ratio_range
    return (hi - lo) / ratio if ratio > 0 else 0.0


def ratio_is_stable(ratio: float, ratio_range: tuple[float, float] | list[float],
                    limit: float = MAX_RATIO_SPREAD) -> bool:
    """True when the ratio's range over the repeats spans at most ``limit`` of the ratio itself."""
    return ratio_spread(ratio, ratio_range) <= limit

