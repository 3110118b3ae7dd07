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
    make_timer,
)
from .measure import Timer, TooSlow, check_too_slow, time_calls
from .memory import peak_memory
from .ort import EXPORT_BATCH, ORT_TOLERANCE, OrtSessions, check_runtime, fill_ort
from .results import (
    BASELINE,
    LAYOUTS,
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
    """The row labels to run: the baseline first, then the others in the given order
    (default: every registered mechanism, then the variants of registered ones)."""
    registered = lightattn.list_attention()
    names = config.attn or [
        *registered,
        *(label for label, v in config.variants.items() if v.attention in registered),
    ]
    rest = [n for n in dict.fromkeys(names) if n != BASELINE]
    if BASELINE in registered:
        return [BASELINE, *rest]
    return rest


def check_labels(config: BenchConfig) -> None:
    """BenchError for a variant that shadows or names no registered mechanism, and for
    --kwargs of a label that is not run."""
    registered = lightattn.list_attention()
    for label, variant in config.variants.items():
        if label in registered:
            raise BenchError(f"variant {label!r} has the name of a registered mechanism")
        if variant.attention not in registered:
            raise BenchError(f"variant {label!r}: {variant.attention!r} is not registered")
    names = mechanism_names(config)
    for name in config.kwargs:
        if name not in names:
            raise BenchError(f"--kwargs given for {name!r}, which is not benchmarked")


def build_modules(
    config: BenchConfig, device: torch.device, dtype: torch.dtype
) -> dict[str, nn.Module]:
    """label -> module in the benchmark's dtype, device and mode; BenchError for bad settings
    and for any error raised while building one (e.g. a huge allocation)."""
    check_labels(config)
    modules: dict[str, nn.Module] = {}
    for label in mechanism_names(config):
        name, kwargs = config.attention_of(label)
        torch.manual_seed(config.seed)
        try:
            module = lightattn.create_attention(name, config.dim, config.heads, **kwargs)
            module.to(device=device, dtype=dtype).train(config.backward)
        except Exception as err:  # noqa: BLE001 - any build failure is a bad setting
            raise BenchError(f"cannot build {label!r}: {first_line(err)}") from None
        modules[label] = module
    return modules


def unwrap(module: nn.Module) -> nn.Module:
    """The eager module behind a torch.compile wrapper."""
    return getattr(module, "_orig_mod", module)


def training_only_note(module: nn.Module) -> str | None:
    """A note for a module that runs work only in training mode (castling's auxiliary
    N×N softmax branch): its time and MACs include that work."""
    if not module.training or not getattr(module, "has_aux", False):
        return None
    weight = float(module.aux_weight)
    if weight <= 0:
        return None
    return f"incl. training-only aux branch (aux_weight={weight:g}, O(N²))"


def first_line(err: BaseException, limit: int = 160) -> str:
    """`Type: first line of the message`, shortened."""
    text = str(err).strip().splitlines()
    msg = text[0] if text else ""
    out = f"{type(err).__name__}: {msg}" if not isinstance(err, ValueError) else msg
    return out if len(out) <= limit else out[: limit - 1] + "…"


def make_call(
    module: nn.Module, x: torch.Tensor, backward: bool, hw: tuple[int, int] | None = None
) -> Callable[[], object]:
    """One benchmarked call: forward under inference mode, or forward + backward of sum().
    `hw` goes with a (B, N, C) token input."""
    args = (x,) if hw is None else (x, hw)
    if not backward:

        def forward() -> object:
            with torch.inference_mode():
                return module(*args)

        return forward
    params = [p for p in module.parameters() if p.requires_grad]

    def forward_backward() -> None:
        for p in params:
            p.grad = None
        module(*args).sum().backward()

    return forward_backward


def make_input(
    config: BenchConfig,
    batch: int,
    h: int,
    w: int,
    device: torch.device,
    dtype: torch.dtype,
    channels: int | None = None,
) -> tuple[torch.Tensor, tuple[int, int] | None]:
    """A random input in the configured layout and the hw to pass with it (tokens only),
    with `channels` channels (default: the configured dim)."""
    gen = torch.Generator().manual_seed(config.seed)
    chans = config.dim if channels is None else channels
    x = torch.randn(batch, chans, h, w, generator=gen).to(device=device, dtype=dtype)
    if config.layout == "tokens":
        return x.flatten(2).transpose(1, 2).contiguous(), (h, w)
    if config.layout == "channels_last":
        return x.contiguous(memory_format=torch.channels_last), None
    return x, None


class Runner:
    """Measures cases one by one, remembering each (mechanism, path)'s history for the
    skip rule."""

    def __init__(
        self, config: BenchConfig, started: float | None = None, timer: Timer | None = None
    ) -> None:
        if config.layout not in LAYOUTS:
            raise BenchError(f"--layout {config.layout!r} is not one of {', '.join(LAYOUTS)}")
        check_runtime(config)
        self.config = config
        self.started = time.perf_counter() if started is None else started
        self.deadline = self.started + config.time_budget if config.time_budget > 0 else None
        self.device = check_device(config.device)
        self.dtype = check_dtype(config.dtype, self.device)
        self.timer = timer or make_timer(self.device)
        self.modules = self.build()
        self.ref_modules = self._reference_modules() if config.reference else {}
        if config.compile:
            self._compile()
        self.history: dict[tuple[str, str], list[Point]] = {}
        self.gemm: dict[str, Any] = {}
        self.gemm_seconds = 0.0
        self.ort = OrtSessions() if config.runtime == "onnxruntime" else None
        peak_memory(lambda: None, self.device)  # the profiler's one-time start-up, not timed

    def build(self) -> dict[str, nn.Module]:
        """Row label -> module in the benchmark's dtype, device and mode."""
        return build_modules(self.config, self.device, self.dtype)

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
            rate, size, _ = gemm_rate(self.device, DTYPES[name], self.timer, GEMM_SIZE)
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

    def case_label(self, case: tuple[str, tuple[int, int]]) -> tuple[str, tuple[int, int]]:
        """(label, size) of a case from `cases()`, for progress callbacks."""
        name, size = case
        return name, size

    def finish(self, rows: list[Row]) -> None:
        """The columns that need every row: the ratio to the baseline and %GEMM."""
        add_baseline_ratios(rows)
        add_gemm_fractions(rows, self.gemm_flops / 1e9)

    def config_dict(self) -> dict[str, Any]:
        """The configuration as stored in results.json."""
        return config_dict(self.config)

    def end_facts(self) -> dict[str, Any]:
        """Machine facts taken at the end of the run, added to results.json's (none here)."""
        return {}

    def run_case(self, name: str, size: tuple[int, int]) -> Row:
        """Measure one case on both paths and return its row."""
        row = self._new_row(name, *size)
        fast = self.measure_path(name, "fast", size)
        ref = None
        if self.config.reference:
            ref = self.measure_path(name, "reference", size)
        fill_row(row, fast, ref, self.config)
        note = training_only_note(unwrap(self.modules[name]))
        if note:
            row.note = "; ".join(n for n in (note, row.note) if n)
        self.add_ort(row, name, self.config.batch, size)
        return row

    def case_input(self, name: str, batch: int, h: int, w: int) -> torch.Tensor:
        """The (B, C, H, W) input of a case, in the configured memory format."""
        return self._input(batch, h, w)[0]

    def case_work(self, name: str, batch: int, h: int, w: int) -> tuple[int, int | None]:
        """(tokens, MACs) of one call of a case: the units of its skip-rule history."""
        return h * w, batch_macs(unwrap(self.modules[name]), h, w, batch)

    def add_ort(self, row: Any, name: str, batch: int, size: tuple[int, int]) -> None:
        """With --runtime onnxruntime: the case timed in onnxruntime, into the row."""
        if self.ort is None:
            return
        note = fill_ort(row, self.measure_ort(name, batch, size))
        row.ort_max_abs_diff = self.ort.diffs.pop((name, batch, size), None)
        if row.ort_max_abs_diff is not None and not row.ort_max_abs_diff <= ORT_TOLERANCE:
            note = f"onnxruntime differs from eager by {row.ort_max_abs_diff:.2g}"
        if note:
            row.note = "; ".join(n for n in (row.note, note) if n)

    def measure_ort(self, name: str, batch: int, size: tuple[int, int]) -> PathResult:
        """Time one case in onnxruntime: the eager module (exported at its first case, with
        dynamic batch, H and W) on the same input, by the same timer and skip rule."""
        assert self.ort is not None
        h, w = size
        module = unwrap(self.modules[name])

        def example(low: int) -> torch.Tensor:
            return self.case_input(name, EXPORT_BATCH, max(h, low), max(w, low))

        try:
            session = self.ort.session(name, module, example)
        except BenchError as err:
            return PathResult(error=str(err))
        low = self.ort.min_sides[name]
        if min(h, w) < low:
            return PathResult(skipped=f"the export covers H, W >= {low}")

        def make() -> Callable[[], object]:
            from ..export.onnx import eager_outputs, max_abs_diff, ort_feed

            x = self.case_input(name, batch, h, w)
            feed = ort_feed(session, x)
            diff = max_abs_diff(session.run(None, feed), eager_outputs(module, x))
            self.ort.diffs[(name, batch, size)] = diff
            return lambda: session.run(None, feed)

        tokens, macs = self.case_work(name, batch, h, w)
        return self.measure(
            (name, "onnxruntime"), tokens, macs, make,
            lambda history: history.extend(self.history.get((name, "fast"), [])),
        )  # fmt: skip

    def path_module(self, name: str, path: str) -> nn.Module:
        """The module of the "fast" or the "reference" path of a row label."""
        return self.modules[name] if path == "fast" else self.ref_modules[name]

    def _new_row(self, name: str, h: int, w: int) -> Row:
        inner = unwrap(self.modules[name])
        c = self.config
        ref_macs = None
        if c.reference:
            ref_macs = batch_macs(unwrap(self.ref_modules[name]), h, w, c.batch)
        return Row(
            mechanism=name, attention=inner.name, settings=dict(inner.settings()), h=h, w=w,
            tokens=h * w, batch=c.batch, dim=c.dim, heads=inner.num_heads, dtype=c.dtype,
            device=self.device.type, mode=c.mode, compiled=c.compile, layout=c.layout,
            params=sum(p.numel() for p in inner.parameters()),
            macs=batch_macs(inner, h, w, c.batch),
            useful_macs=batch_macs(inner, h, w, c.batch, useful=True), ref_macs=ref_macs,
        )  # fmt: skip

    def _input(self, batch: int, h: int, w: int) -> tuple[torch.Tensor, tuple[int, int] | None]:
        return make_input(self.config, batch, h, w, self.device, self.dtype)

    def measure_path(self, name: str, path: str, size: tuple[int, int]) -> PathResult:
        """Time and profile one path of one case, unless the skip rule says no. The skip
        rule uses this path's own MACs (the reference path often computes more) and its own
        history."""
        module = self.path_module(name, path)
        h, w = size
        batch = self.config.batch

        def make() -> Callable[[], object]:
            x, hw = self._input(batch, h, w)
            return make_call(module, x, self.config.backward, hw)

        return self.measure(
            (name, path), h * w, batch_macs(unwrap(module), h, w, batch), make,
            lambda history: self._probe(module, history, h, w),
        )  # fmt: skip

    def measure(
        self,
        key: tuple[str, str],
        tokens: int,
        macs: int | None,
        make: Callable[[], Callable[[], object]],
        probe: Callable[[list[Point]], None],
    ) -> PathResult:
        """Time and profile one call unless the skip rule says no. `key` names the history
        the skip rule extrapolates from, `tokens` and `macs` are the call's work, `make()`
        builds the call (only when it runs) and `probe(history)` seeds an empty history."""
        history = self.history.setdefault(key, [])
        if not history:
            probe(history)
        reason = self.skip_reason(history, tokens, macs)
        if reason:
            return PathResult(skipped=reason)
        call = make()
        compiled = self._compile_call(call)
        if isinstance(compiled, PathResult):
            return compiled
        try:
            mem, warmed = self.warmup(call)
            timing = time_calls(
                call, min_time=self.config.min_time, min_runs=self.config.min_runs,
                max_seconds=self.config.max_case_seconds, timer=self.timer, warmed=warmed,
                max_warmups=1,
            )  # fmt: skip
        except TooSlow as slow:
            return PathResult(skipped=str(slow))
        except Exception as err:  # a mechanism failing at a size is a result, not a crash
            return PathResult(error="error: " + first_line(err))
        history[:] = [p for p in history if p.tokens != tokens]  # the probe at this size
        history.append(Point(tokens, timing.best, mem, macs or 0))
        return PathResult(timing=timing, mem_bytes=mem, compile_seconds=compiled)

    def _compile_call(self, call: Callable[[], object]) -> float | None | PathResult:
        """With --compile: one untimed call that compiles for this shape (kept out of the
        timing, the TooSlow check and the memory figure); its seconds, or the error row."""
        if not self.config.compile:
            return None
        try:
            return self.timer(call)
        except Exception as err:  # noqa: BLE001 - a failing compile is a result
            return PathResult(error="compile failed: " + first_line(err))

    def warmup(self, call: Callable[[], object]) -> tuple[int | None, list[float]]:
        """A plain warm-up call (its time decides TooSlow), then one profiled call for the
        peak memory, which also serves as the second warm-up; its time is not used.
        Returns (peak bytes, [plain warm-up seconds])."""
        plain = self.timer(call)
        check_too_slow(plain, self.config.max_case_seconds, self.config.min_runs)
        return peak_memory(call, self.device), [plain]

    def skip_reason(self, history: list[Point], tokens: int, macs: int | None) -> str | None:
        """Why a case must not run (time or memory estimate over a limit), or None."""
        c = self.config
        call = predict_seconds(history, tokens, macs or 0, c.flops_per_mac, self.floor_flops)
        mem = predict_memory(history, tokens)
        if mem is not None and mem > c.max_memory_gb * 1e9:
            return f"estimated {mem / 1e9:.3g} GB > {c.max_memory_gb:g} GB memory limit"
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
        inner = unwrap(module)
        b = self.config.batch
        for ph, pw in probe_sizes(h, w):
            x, hw = self._input(1, ph, pw)
            call = make_call(inner, x, self.config.backward, hw)
            try:
                call()
                seconds = self.timer(call)
                mem = peak_memory(call, self.device)
            except Exception:  # noqa: BLE001 - the real case will report the error
                return
            macs = batch_macs(inner, ph, pw, b) or 0
            history.append(Point(ph * pw, seconds * b, mem * b if mem else None, macs))


def batch_macs(module: nn.Module, h: int, w: int, batch: int, useful: bool = False) -> int | None:
    """MACs of one call on a batch (computed, or with `useful` what the math needs), in the
    module's current mode and path; None when the module does not count them."""
    count = module.useful_macs if useful else module.macs
    try:
        return int(count(h, w)) * batch
    except NotImplementedError:
        return None


def probe_sizes(h: int, w: int, targets: tuple[int, ...] = PROBE_TOKENS) -> list[tuple[int, int]]:
    """Map sizes of the batch-1 probes before the first size of a path: (h, w) itself when
    it has at most targets[-1] tokens, else about each of `targets` tokens, same aspect."""
    if h * w <= targets[-1]:
        return [(h, w)]
    out = []
    for target in targets:
        f = math.sqrt(target / (h * w))
        out.append((max(1, round(h * f)), max(1, round(w * f))))
    return out


def make_runner(
    config: BenchConfig, started: float | None = None, timer: Timer | None = None
) -> Runner:
    """Validate `config` (BenchError on bad settings), set the torch threads it asks for and
    build its mechanisms. `started` (a perf_counter time) is when the time budget starts
    counting (default: now); `timer` times one call (default: the device's, see
    machine.make_timer)."""
    if config.threads:
        torch.set_num_threads(config.threads)
    return Runner(config, started, timer)


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
    for i, case in enumerate(cases):
        if on_case is not None:
            on_case(i, len(cases), *runner.case_label(case))
        rows.append(runner.run_case(*case))
    gemm = runner.measure_gemm("end")
    machine.update(runner.end_facts())
    runner.finish(rows)
    result = BenchResult(machine, runner.config_dict(), gemm, rows)
    result.wall_seconds = time.perf_counter() - runner.started
    return result
