"""The skip rule: predict a case's time and memory before running it.

Time of one call: the fastest call of the last measured size of the same mechanism and path,
scaled by (N_new / N_last)^p with p the exponent of the mechanism's analytic MACs between the
two sizes (at least 1: no mechanism is sublinear in the token count); never less than the
MACs at this machine's GEMM rate. Measured time exponents are not used: at small sizes they
mostly measure overheads and, on a shared machine, scheduling noise.
Memory: the last measured peak scaled by (N_new / N_last)^q with q the exponent measured
between the last two sizes (at least 1); allocation sizes are exact, not noisy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Point:
    """One measured (or probed, then scaled to the benchmark batch) call."""

    tokens: int
    seconds: float
    mem_bytes: int | None
    macs: int


def slope(n0: float, y0: float, n1: float, y1: float) -> float | None:
    """d log y / d log n between two points, None when undefined."""
    if min(n0, y0, n1, y1) <= 0 or n0 == n1:
        return None
    return math.log(y1 / y0) / math.log(n1 / n0)


def predict_seconds(
    history: list[Point], tokens: int, macs: int, flops_per_mac: float, gemm_rate: float
) -> float:
    """Seconds one call is expected to take at `tokens` (history sorted by tokens)."""
    floor = flops_per_mac * macs / gemm_rate
    if not history:
        return floor
    last = history[-1]
    if tokens <= last.tokens:
        return max(floor, last.seconds * macs / max(last.macs, 1))
    p = max(1.0, slope(last.tokens, last.macs, tokens, macs) or 1.0)
    return max(floor, last.seconds * (tokens / last.tokens) ** p)


def predict_memory(history: list[Point], tokens: int) -> float | None:
    """Peak bytes one call is expected to allocate at `tokens`, None without a measurement."""
    known = [p for p in history if p.mem_bytes]
    if not known:
        return None
    last = known[-1]
    q = 1.0
    if len(known) >= 2:
        prev = known[-2]
        q = max(q, slope(prev.tokens, prev.mem_bytes, last.tokens, last.mem_bytes) or 1.0)
    return last.mem_bytes * (max(tokens, 1) / last.tokens) ** q


def case_seconds(call: float, min_time: float, min_runs: int) -> float:
    """Seconds a whole case takes: two untimed calls (a plain warm-up and the profiled call
    for the peak memory) and the timed runs."""
    return 2 * call + max(min_runs * call, min_time)
