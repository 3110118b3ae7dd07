"""Timing: a timer per device (wall clock, or CUDA events), warm-up, then repeated calls
until a minimum number of runs and a minimum time; median, min, max and quartiles."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

# seconds taken by one call of a function
Timer = Callable[[Callable[[], object]], float]


@dataclass(frozen=True)
class Timing:
    """Seconds per call of the timed runs (warm-up calls kept apart)."""

    times: list[float]
    warmup: list[float] = field(default_factory=list)

    @property
    def runs(self) -> int:
        return len(self.times)

    @property
    def best(self) -> float:
        return float(min(self.times))

    @property
    def worst(self) -> float:
        return float(max(self.times))

    @property
    def median(self) -> float:
        return float(np.median(self.times))

    @property
    def q1(self) -> float:
        return float(np.percentile(self.times, 25))

    @property
    def q3(self) -> float:
        return float(np.percentile(self.times, 75))

    @property
    def iqr(self) -> float:
        return self.q3 - self.q1


class TooSlow(Exception):
    """The first (warm-up) call showed that the minimum number of runs would take too long."""

    def __init__(self, seconds: float, limit: float, min_runs: int) -> None:
        super().__init__(
            f"one call took {seconds:.2f} s: {min_runs} runs would exceed "
            f"the {limit:g} s case limit"
        )
        self.seconds = seconds


def check_too_slow(seconds: float, max_seconds: float, min_runs: int) -> None:
    """TooSlow when `min_runs` calls of `seconds` each would exceed `max_seconds`."""
    if seconds * min_runs > max_seconds:
        raise TooSlow(seconds, max_seconds, min_runs)


def wall_timer(
    sync: Callable[[], None] = lambda: None, clock: Callable[[], float] = time.perf_counter
) -> Timer:
    """Times a call with `clock` (seconds), the device synchronised before and after."""

    def timed(fn: Callable[[], object]) -> float:
        sync()
        start = clock()
        fn()
        sync()
        return clock() - start

    return timed


def cuda_event_timer(event: Callable[[], object], sync: Callable[[], None]) -> Timer:
    """Times a call on the GPU's own clock: an event recorded before and one after the call
    on the current stream (`event()` makes one, e.g. torch.cuda.Event(enable_timing=True)),
    so host-side scheduling outside the call is not counted."""

    def timed(fn: Callable[[], object]) -> float:
        start, end = event(), event()
        sync()
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3  # elapsed_time is in ms

    return timed


def time_calls(
    fn: Callable[[], object],
    *,
    min_time: float,
    min_runs: int = 7,
    max_runs: int = 10_000,
    max_seconds: float = math.inf,
    timer: Timer | None = None,
    warmed: list[float] | None = None,
    max_warmups: int = 2,
) -> Timing:
    """Warm up (one call; up to `max_warmups` when a call is quick), then time calls until at
    least `min_runs` runs and `min_time` seconds. `warmed`: seconds of untimed calls already
    made (they count as warm-up). Raises TooSlow when the last warm-up shows that `min_runs`
    runs would take longer than `max_seconds`."""
    timer = timer or wall_timer()
    warmup = list(warmed or [])
    if not warmup:
        warmup.append(timer(fn))
    check_too_slow(warmup[-1], max_seconds, min_runs)
    while len(warmup) < max_warmups and warmup[-1] < 0.05:
        warmup.append(timer(fn))
    times: list[float] = []
    while len(times) < max_runs:
        times.append(timer(fn))
        if len(times) >= min_runs and sum(times) >= min(min_time, max_seconds):
            break
    return Timing(times, warmup)
