"""What the benchmark runs on: device and dtype checks, machine facts, the GEMM rate."""

from __future__ import annotations

import datetime
import os
import platform
from collections.abc import Callable
from typing import Any

import torch

from .measure import Timer, Timing, cuda_event_timer, time_calls, wall_timer

DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
}
# a GPU GEMM this large is bound by arithmetic, not by kernel launches
CUDA_GEMM_SIZE = 4096


class BenchError(ValueError):
    """A request the benchmark cannot honour (bad device, dtype, mechanism, size...)."""


def check_device(device: str) -> torch.device:
    """The torch device for "cpu" or "cuda"; BenchError when CUDA is asked for and absent."""
    if device == "cuda":
        if not torch.cuda.is_available():
            raise BenchError("--device cuda was requested but no CUDA GPU is available")
        return torch.device("cuda")
    if device != "cpu":
        raise BenchError(f"--device {device!r} is not one of cpu, cuda")
    return torch.device("cpu")


def check_dtype(name: str, device: torch.device) -> torch.dtype:
    """The torch dtype for a name; BenchError unless a tiny matmul and softmax work in it on
    `device`."""
    if name not in DTYPES:
        raise BenchError(f"--dtype {name!r} is not one of {', '.join(DTYPES)}")
    dtype = DTYPES[name]
    try:
        ok = probe_dtype(dtype, device)
    except (RuntimeError, TypeError, NotImplementedError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise BenchError(f"--dtype {name} is not supported on {device.type}: {first}") from None
    if not ok:
        raise BenchError(f"--dtype {name} gives non-finite results on {device.type}")
    return dtype


def probe_dtype(dtype: torch.dtype, device: torch.device) -> bool:
    """Run a tiny matmul + softmax in `dtype` on `device`; whether the result is finite."""
    a = torch.ones(8, 8, dtype=dtype, device=device)
    return bool(torch.isfinite(torch.softmax(a @ a, dim=-1).float()).all())


def make_timer(device: torch.device) -> Timer:
    """CUDA events around each call on a GPU (the device's own clock); the wall clock on
    the CPU."""
    if device.type == "cuda":
        return cuda_event_timer(
            lambda: torch.cuda.Event(enable_timing=True), torch.cuda.synchronize
        )
    return wall_timer()


def cpu_model() -> str:
    """The CPU's marketing name, from /proc/cpuinfo where there is one."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def usable_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def machine_info(device: torch.device, dtype_name: str) -> dict[str, Any]:
    """Facts about the machine and the software, stored with every result file."""
    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": usable_cores(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": device.type,
        "dtype": dtype_name,
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
    }
    if hasattr(os, "getloadavg"):
        info["load_average_at_start"] = [round(v, 2) for v in os.getloadavg()]
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def gemm_rate(
    device: torch.device,
    dtype: torch.dtype,
    timer: Timer,
    max_size: int = 1024,
    min_time: float = 0.3,
) -> tuple[float, int, Timing]:
    """FLOP/s of a square matmul on this machine (median). On a GPU: 4096³, enough work per
    call not to be bound by kernel launches, timed at least 10 times. On a CPU: the largest
    of 256, 512, ..., `max_size` whose one call takes about 0.1 s or less (a dtype without
    fast kernels, such as bf16 on many CPUs, gets a smaller size). Returns (FLOP/s, size,
    timing)."""
    with torch.inference_mode():
        if device.type == "cuda":
            size, min_runs = CUDA_GEMM_SIZE, 10
        else:
            size, min_runs = cpu_gemm_size(device, dtype, timer, max_size), 5
        call = gemm_call(device, dtype, size)
        timing = time_calls(call, min_time=min_time, min_runs=min_runs, timer=timer)
    return 2 * size**3 / timing.median, size, timing


def cpu_gemm_size(device: torch.device, dtype: torch.dtype, timer: Timer, max_size: int) -> int:
    """The largest of 256, 512, ..., max_size whose one call takes about 0.1 s or less."""
    size = 256
    small = gemm_call(device, dtype, size)
    small()
    t = timer(small)
    while size < max_size and t * 8 <= 0.1:
        size, t = size * 2, t * 8
    return size


def gemm_call(device: torch.device, dtype: torch.dtype, size: int) -> Callable[[], object]:
    """A function multiplying two random size x size matrices."""
    gen = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(size, size, device=device, generator=gen).to(dtype)
    b = torch.randn(size, size, device=device, generator=gen).to(dtype)
    return lambda: a @ b
