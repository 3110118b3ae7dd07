"""Run the benchmark: build each mechanism once, then measure every (size, mechanism) case on
the fast and the reference path, skipping (with a stated reason) what would take too long."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

import lightattn

from .estimate import Point, case_seconds, predict_memory, predict_seconds
from .machine import (
    DTYPES,
    BenchError,
    check_device,
    check_dtype,
    gemm_rate,
    machine_info,
    synchronizer,
)
from .measure import TooSlow, check_too_slow, time_calls, timed_call
from .memory import peak_memory
from .results import (
    BASELINE,
    BenchConfig,
    BenchResult,
    PathResult,
    Row,
    add_baseline_ratios,
    add_gemm_fractions,
    config_dict,
    fill_row,
)

PROBE_TOKENS = (256, 1024)
GEMM_SIZE = 1024


def mechanism_names(config: BenchConfig) -> list[str]:
    """The mechanisms to run: the baseline first, then the others in the given order."""
    names = config.attn or lightattn.list_attention()
    rest = [n for n in dict.fromkeys(names) if n != BASELINE]
    if BASELINE in lightattn.list_attention():
        return [BASELINE, *rest]
    return rest


def build_modules(config: BenchConfig, device: torch.device, dtype: torch.dtype):
    """name -> module in the benchmark's dtype, device and mode; BenchError for bad settings
    and for any error raised while building one (e.g. a huge allocation)."""
    for name in config.kwargs:
        if name not in mechanism_names(config):
            raise BenchError(f"--kwargs given for {name!r}, which is not benchmarked")
    modules: dict[str, nn.Module] = {}
    for name in mechanism_names(config):
        torch.manual_seed(config.seed)
        try:
            module = lightattn.create_attention(
                name, config.dim, config.heads, **config.kwargs.get(name, {})
            )
            module.to(device=device, dtype=dtype).train(config.backward)
        except Exception as err:  # noqa: BLE001 - any build failure is a bad setting
            raise BenchError(f"cannot build {name!r}: {first_line(err)}") from None
        modules[name] = module
    return modules


def first_line(err: BaseException, limit: int = 160) -> str:
    """`Type: first line of the message`, shortened."""
    text = str(err).strip().splitlines()
    msg = text[0] if text else ""
    out = f"{type(err).__name__}: {msg}" if not isinstance(err, ValueError) else msg
    return out if len(out) <= limit else out[: limit - 1] + "…"


def make_call(module: nn.Module, x: torch.Tensor, backward: bool) -> Callable[[], object]:
    """One benchmarked call: forward under inference mode, or forward + backward of sum()."""
    if not backward:

        def forward() -> object:
            with torch.inference_mode():
                return module(x)

        return forward
    params = [p for p in module.parameters() if p.requires_grad]

    def forward_backward() -> None:
        for p in params:
            p.grad = None
        module(x).sum().backward()

    return forward_backward


class Runner:
    """Measures cases one by one, remembering each (mechanism, path)'s history for the
    skip rule."""

    def __init__(self, config: BenchConfig, started: float | None = None) -> None:
        self.config = config
        self.started = time.perf_counter() if started is None else started
        self.deadline = self.started + config.time_budget if config.time_budget > 0 else None
        self.device = check_device(config.device)
        self.dtype = check_dtype(config.dtype, self.device)
        self.sync = synchronizer(self.device)
        self.modules = build_modules(config, self.device, self.dtype)
        self.ref_modules = self._reference_modules() if config.reference else {}
        if config.compile:
            self._compile()
        self.history: dict[tuple[str, str], list[Point]] = {}
        self.gemm: dict[str, Any] = {}
        self.gemm_seconds = 0.0
        peak_memory(lambda: None, self.device)  # the profiler's one-time start-up, not timed

    def _reference_modules(self) -> dict[str, nn.Module]:
        refs = {}
        for name, module in self.modules.items():
            try:
                ref = copy.deepcopy(module)
            except Exception as err:  # noqa: BLE001 - e.g. MemoryError for a huge module
                raise BenchError(
                    f"cannot copy {name!r} for its reference path: {first_line(err)}"
                ) from None
            ref.reference = True
            refs[name] = ref
        return refs

    def _compile(self) -> None:
        self.modules = {n: torch.compile(m) for n, m in self.modules.items()}
        self.ref_modules = {n: torch.compile(m) for n, m in self.ref_modules.items()}

    def measure_gemm(self, when: str = "start") -> dict[str, Any]:
        """This machine's GEMM rate in fp32 and in the benchmark dtype, measured at the start
        and again at the end of the run; the larger figure (and the matrix size that gave it)
        is the one rows are compared with (on a busy machine one of the two may have been
        disturbed)."""
        start = time.perf_counter()
        for name in dict.fromkeys(["fp32", self.config.dtype]):
            rate, size, _ = gemm_rate(self.device, DTYPES[name], GEMM_SIZE)
            self.gemm[f"{name}_gflops_{when}"] = rate / 1e9
            if rate / 1e9 >= self.gemm.get(f"{name}_gflops", 0.0):
                self.gemm[f"{name}_gflops"] = rate / 1e9
                self.gemm[f"{name}_size"] = size
        self.gemm_seconds = time.perf_counter() - start
        return self.gemm

    @property
    def gemm_flops(self) -> float:
        """FLOP/s of the benchmark dtype's GEMM (inf until measured)."""
        return self.gemm.get(f"{self.config.dtype}_gflops", math.inf) * 1e9

    @property
    def floor_flops(self) -> float:
        """The skip rule's floor: the faster of the fp32 and the dtype GEMM. A dtype without
        fast GEMM kernels (bf16 on many CPUs) still runs the mechanisms' other kernels fast,
        so its slow GEMM rate must not set it."""
        return max(self.gemm.get("fp32_gflops", math.inf) * 1e9, self.gemm_flops)

    def cases(self) -> list[tuple[str, tuple[int, int]]]:
        """(mechanism, (H, W)) in the order they run: by size, the baseline first."""
        sizes = sorted(dict.fromkeys(self.config.sizes), key=lambda s: (s[0] * s[1], s))
        return [(name, size) for size in sizes for name in self.modules]

    def run_case(self, name: str, size: tuple[int, int]) -> Row:
        """Measure one case on both paths and return its row."""
        row = self._new_row(name, *size)
        fast = self.measure_path(name, "fast", size, row.macs)
        ref = None
        if self.config.reference:
            ref = self.measure_path(name, "reference", size, row.macs)
        fill_row(row, fast, ref, self.config)
        return row

    def _new_row(self, name: str, h: int, w: int) -> Row:
        module = self.modules[name]
        inner = getattr(module, "_orig_mod", module)
        try:
            macs = int(inner.macs(h, w)) * self.config.batch
        except NotImplementedError:
            macs = None
        c = self.config
        return Row(
            mechanism=name, settings=dict(inner.settings()), h=h, w=w, tokens=h * w,
            batch=c.batch, dim=c.dim, heads=c.heads, dtype=c.dtype, device=self.device.type,
            mode=c.mode, compiled=c.compile, params=sum(p.numel() for p in inner.parameters()),
            macs=macs,
        )  # fmt: skip

    def _input(self, batch: int, h: int, w: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(self.config.seed)
        x = torch.randn(batch, self.config.dim, h, w, generator=gen)
        return x.to(device=self.device, dtype=self.dtype)

    def measure_path(self, name: str, path: str, size: tuple[int, int], macs: int | None):
        """Time and profile one path of one case, unless the skip rule says no."""
        module = self.modules[name] if path == "fast" else self.ref_modules[name]
        history = self.history.setdefault((name, path), [])
        h, w = size
        if not history:
            self._probe(module, history, h, w)
        reason = self.skip_reason(history, h * w, macs)
        if reason:
            return PathResult(skipped=reason)
        call = make_call(module, self._input(self.config.batch, h, w), self.config.backward)
        compiled = self._compile_call(call)
        if isinstance(compiled, PathResult):
            return compiled
        try:
            mem, warmed = self.warmup(call)
            timing = time_calls(
                call, min_time=self.config.min_time, min_runs=self.config.min_runs,
                max_seconds=self.config.max_case_seconds, sync=self.sync, warmed=warmed,
                max_warmups=1,
            )  # fmt: skip
        except TooSlow as slow:
            return PathResult(skipped=str(slow))
        except Exception as err:  # a mechanism failing at a size is a result, not a crash
            return PathResult(error="error: " + first_line(err))
        history[:] = [p for p in history if p.tokens != h * w]  # the probe at this size
        history.append(Point(h * w, timing.best, mem, macs or 0))
        return PathResult(timing=timing, mem_bytes=mem, compile_seconds=compiled)

    def _compile_call(self, call: Callable[[], object]) -> float | None | PathResult:
        """With --compile: one untimed call that compiles for this shape (kept out of the
        timing, the TooSlow check and the memory figure); its seconds, or the error row."""
        if not self.config.compile:
            return None
        try:
            return timed_call(call, self.sync)
        except Exception as err:  # noqa: BLE001 - a failing compile is a result
            return PathResult(error="compile failed: " + first_line(err))

    def warmup(self, call: Callable[[], object]) -> tuple[int | None, list[float]]:
        """A plain warm-up call (its time decides TooSlow), then one profiled call for the
        peak memory, which also serves as the second warm-up; its time is not used.
        Returns (peak bytes, [plain warm-up seconds])."""
        plain = timed_call(call, self.sync)
        check_too_slow(plain, self.config.max_case_seconds, self.config.min_runs)
        return peak_memory(call, self.device), [plain]

    def skip_reason(self, history: list[Point], tokens: int, macs: int | None) -> str | None:
        """Why a case must not run (time or memory estimate over a limit), or None."""
        c = self.config
        call = predict_seconds(history, tokens, macs or 0, c.flops_per_mac, self.floor_flops)
        mem = predict_memory(history, tokens)
        if mem is not None and mem > c.max_memory_gb * 1e9:
            return f"estimated {mem / 1e9:.1f} GB > {c.max_memory_gb:g} GB memory limit"
        total = case_seconds(call, c.min_time, c.min_runs)
        if total > c.max_case_seconds:
            return (
                f"estimated {total:.1f} s (one call ≈ {call:.2f} s) "
                f"> {c.max_case_seconds:g} s case limit"
            )
        if self.deadline is not None:
            # the end-of-run GEMM measurement takes about as long as the one at the start
            left = self.deadline - time.perf_counter() - self.gemm_seconds
            if total > left:
                return (
                    f"time budget: estimated {total:.1f} s > {max(left, 0):.1f} s left "
                    f"of {c.time_budget:g} s"
                )
        return None

    def _probe(self, module: nn.Module, history: list[Point], h: int, w: int) -> None:
        """Seed an empty history with batch-1 calls of the eager module, scaled to the batch:
        at this size when it has at most 1024 tokens (cheap), else at ~256 and ~1024 tokens,
        so that the first size is predicted (time and memory) from measurements."""
        inner = getattr(module, "_orig_mod", module)
        for ph, pw in probe_sizes(h, w):
            call = make_call(inner, self._input(1, ph, pw), self.config.backward)
            try:
                call()
                seconds = timed_call(call, self.sync)
                mem = peak_memory(call, self.device)
                macs = int(inner.macs(ph, pw))
            except Exception:  # noqa: BLE001 - the real case will report the error
                return
            b = self.config.batch
            history.append(Point(ph * pw, seconds * b, mem * b if mem else None, macs * b))


def probe_sizes(h: int, w: int) -> list[tuple[int, int]]:
    """Map sizes of the batch-1 probes before the first size of a path."""
    if h * w <= PROBE_TOKENS[-1]:
        return [(h, w)]
    out = []
    for target in PROBE_TOKENS:
        f = math.sqrt(target / (h * w))
        out.append((max(1, round(h * f)), max(1, round(w * f))))
    return out


def make_runner(config: BenchConfig, started: float | None = None) -> Runner:
    """Validate `config` (BenchError on bad settings), set the torch threads it asks for and
    build its mechanisms. `started` (a perf_counter time) is when the time budget starts
    counting (default: now)."""
    if config.threads:
        torch.set_num_threads(config.threads)
    return Runner(config, started)


def run_benchmark(
    config: BenchConfig,
    on_case: Callable[[int, int, str, tuple[int, int]], None] | None = None,
    runner: Runner | None = None,
) -> BenchResult:
    """Run every case of `config` (on `runner` if already made by `make_runner`).
    `on_case(index, total, name, size)` is called before each case."""
    runner = runner or make_runner(config)
    config = runner.config
    runner.measure_gemm("start")
    machine = machine_info(runner.device, config.dtype)
    cases = runner.cases()
    rows = []
    for i, (name, size) in enumerate(cases):
        if on_case is not None:
            on_case(i, len(cases), name, size)
        rows.append(runner.run_case(name, size))
    gemm = runner.measure_gemm("end")
    add_baseline_ratios(rows)
    add_gemm_fractions(rows, runner.gemm_flops / 1e9)
    result = BenchResult(machine, config_dict(config), gemm, rows)
    result.wall_seconds = time.perf_counter() - runner.started
    return result
