"""Peak memory allocated by one call: CUDA allocator statistics, or on CPU the profiler's
allocation events replayed in time order."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator

import torch
from torch.profiler import ProfilerActivity, profile


def peak_memory(fn: Callable[[], object], device: torch.device) -> int | None:
    """Peak bytes allocated during one call of fn above what was allocated before it
    (inputs and parameters excluded, the output and every temporary included).
    None when the allocation events are not available."""
    if device.type == "cuda":
        return cuda_peak(fn, device)
    return cpu_peak(fn)


def cuda_peak(fn: Callable[[], object], device: torch.device) -> int:
    """max_memory_allocated after a reset, minus the bytes allocated before the call."""
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    fn()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) - before


def cpu_peak(fn: Callable[[], object]) -> int | None:
    """Replay the profiler's allocation (+bytes) and free (-bytes) events in time order; the
    running sum's maximum is the peak."""
    with quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    sizes = allocation_events(prof)
    if sizes is None:
        return None
    return peak_of(sizes)


def allocation_events(prof: profile) -> list[int] | None:
    """Signed byte counts of the CPU allocator events, in time order."""
    try:
        events = prof.profiler.kineto_results.events()
    except AttributeError:
        return None
    memory = [e for e in events if e.name() == "[memory]" and e.device_type().name == "CPU"]
    memory.sort(key=lambda e: e.start_ns())
    return [int(e.nbytes()) for e in memory]


def peak_of(sizes: list[int]) -> int:
    """The largest running sum of signed allocation sizes (0 if nothing was allocated)."""
    current = peak = 0
    for size in sizes:
        current += size
        peak = max(peak, current)
    return peak


@contextlib.contextmanager
def quiet_stderr() -> Iterator[None]:
    """Silence file descriptor 2 (the profiler's C++ start/stop log lines) while inside."""
    fd = 2
    sys.stderr.flush()
    try:
        saved = os.dup(fd)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), fd)
            yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)
