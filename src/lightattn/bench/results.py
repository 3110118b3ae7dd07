"""What a run is (BenchConfig) and what it produces (Row, BenchResult), with the derived
columns filled in from the measurements."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from lightattn.layers._checks import default_heads

from .measure import Timing

BASELINE = "mhsa"
DEFAULT_SIZES = [(14, 14), (28, 28), (56, 56), (112, 112)]
LAYOUTS = ("nchw", "channels_last", "tokens")


@dataclass(frozen=True)
class Variant:
    """A benchmark row built from a registered mechanism with constructor arguments of its
    own (`--kwargs LABEL:key=value` adds to them)."""

    attention: str
    kwargs: dict[str, Any] = field(default_factory=dict)


def default_variants() -> dict[str, Variant]:
    """Rows the default run adds to the registered mechanisms: Swin's shifted windows, what
    every other block of a Swin backbone pays."""
    return {"window+shift": Variant("window", {"shift": True})}


@dataclass
class BenchConfig:
    """Everything that defines a benchmark run (the CLI's options, validated)."""

    attn: list[str] = field(default_factory=list)
    sizes: list[tuple[int, int]] = field(default_factory=lambda: list(DEFAULT_SIZES))
    dim: int = 64
    heads: int | None = None  # None: the library default, dim // 32 (or 1)
    batch: int = 8
    dtype: str = "fp32"
    device: str = "cpu"
    backward: bool = False
    compile: bool = False
    layout: str = "nchw"
    variants: dict[str, Variant] = field(default_factory=default_variants)
    kwargs: dict[str, dict[str, Any]] = field(default_factory=dict)
    min_time: float = 0.25
    min_runs: int = 7
    reference: bool = True
    max_case_seconds: float = 40.0
    max_memory_gb: float = 4.0
    time_budget: float = 300.0
    threads: int | None = None
    seed: int = 0
    runtime: str = "eager"  # or "onnxruntime": each case also timed in onnxruntime

    @property
    def mode(self) -> str:
        return "forward+backward" if self.backward else "forward"

    @property
    def resolved_heads(self) -> int:
        """The heads every mechanism is built with (the library default when None)."""
        return self.heads if self.heads is not None else default_heads(self.dim)

    def attention_of(self, label: str) -> tuple[str, dict[str, Any]]:
        """The registered name and constructor arguments of a row label (a registered
        name, or a variant's label)."""
        variant = self.variants.get(label)
        base, kwargs = (variant.attention, variant.kwargs) if variant else (label, {})
        return base, {**kwargs, **self.kwargs.get(label, {})}

    @property
    def flops_per_mac(self) -> float:
        """FLOPs per forward MAC: 2, or 6 with backward (backward ≈ 2× forward)."""
        return 6.0 if self.backward else 2.0


@dataclass
class OrtColumns:
    """The onnxruntime columns of both kinds of row (`--runtime onnxruntime`). A row class
    lists it first among its bases, so these fields come last in the row (dataclass fields
    follow the reversed MRO) and in results.csv / results.json."""

    runtime: str = "eager"
    ort_time_ms: float | None = None
    ort_min_ms: float | None = None
    ort_max_ms: float | None = None
    ort_iqr_ms: float | None = None
    ort_runs: int = 0
    ort_vs_eager: float | None = None  # ORT median / eager median (< 1: ORT faster)
    ort_max_abs_diff: float | None = None  # max |ORT - eager| on the case's input


@dataclass
class _RowColumns:
    """The columns of a `Row` before the onnxruntime ones."""

    mechanism: str
    settings: dict[str, Any]
    h: int
    w: int
    tokens: int
    batch: int
    dim: int
    heads: int
    dtype: str
    device: str
    mode: str
    compiled: bool
    params: int
    macs: int | None
    useful_macs: int | None = None
    attention: str = ""
    layout: str = "nchw"
    status: str = "ok"
    note: str = ""
    time_ms: float | None = None
    min_ms: float | None = None
    max_ms: float | None = None
    q1_ms: float | None = None
    q3_ms: float | None = None
    iqr_ms: float | None = None
    runs: int = 0
    images_per_s: float | None = None
    gflops: float | None = None
    computed_gflops: float | None = None
    gemm_fraction: float | None = None
    peak_mem_bytes: int | None = None
    ref_macs: int | None = None
    ref_time_ms: float | None = None
    ref_min_ms: float | None = None
    ref_max_ms: float | None = None
    ref_iqr_ms: float | None = None
    ref_runs: int = 0
    ref_peak_mem_bytes: int | None = None
    ref_speedup: float | None = None
    vs_baseline: float | None = None
    compare_ratio: float | None = None


@dataclass
class Row(OrtColumns, _RowColumns):
    """One (mechanism, size) case. Times in ms per call (the whole batch), memory in bytes.
    `mechanism` is the row's label: the registered name `attention`, or a variant's label.
    `macs` is what the module computes (padding included), `useful_macs` what its math needs;
    GFLOP/s and %GEMM are from the useful ones."""

    @property
    def size(self) -> str:
        return f"{self.h}x{self.w}"

    @property
    def key(self) -> tuple[Any, ...]:
        """The case, as --compare matches it with a row of an earlier run (row_key)."""
        return (self.mechanism, self.h, self.w)

    @property
    def case(self) -> str:
        """The case in words, for messages."""
        return f"{self.mechanism} {self.size}"

    def as_dict(self) -> dict[str, Any]:
        return {"size": self.size, **asdict(self)}


@dataclass
class ModelBenchConfig(BenchConfig):
    """A run of whole named models (`lightattn bench --models`): every (model, batch, size)
    is a case, timed like a layer (eval and inference mode, or train mode and forward +
    backward with `backward`) on random (batch, in_chans, H, W) images. The layer settings
    (attn, dim, heads, batch, variants, kwargs) are not used and there is no reference path.
    `factories`: name -> a function building that model (instead of `create_model(name)`),
    e.g. a small model in a test."""

    models: list[str] = field(default_factory=list)
    batches: list[int] = field(default_factory=lambda: [1, 32])
    sizes: list[tuple[int, int]] = field(default_factory=lambda: [(224, 224)])
    reference: bool = False
    max_case_seconds: float = 120.0
    time_budget: float = 900.0
    factories: dict[str, Callable[[], Any]] = field(default_factory=dict)


# the fields of a ModelBenchConfig that results.json holds
MODEL_CONFIG_FIELDS = (
    "models", "sizes", "batches", "dtype", "device", "backward", "compile", "layout",
    "min_time", "min_runs", "max_case_seconds", "max_memory_gb", "time_budget", "threads",
    "seed", "runtime",
)  # fmt: skip


@dataclass
class _ModelRowColumns:
    """The columns of a `ModelRow` before the onnxruntime ones."""

    model: str
    family: str
    batch: int
    h: int
    w: int
    dtype: str
    device: str
    mode: str
    compiled: bool
    layout: str
    params: int
    macs_per_image: int | None
    macs: int | None
    settings: dict[str, Any] = field(default_factory=dict)
    status: str = "ok"
    note: str = ""
    time_ms: float | None = None
    min_ms: float | None = None
    max_ms: float | None = None
    q1_ms: float | None = None
    q3_ms: float | None = None
    iqr_ms: float | None = None
    runs: int = 0
    images_per_s: float | None = None
    min_images_per_s: float | None = None
    max_images_per_s: float | None = None
    gflops: float | None = None
    gemm_fraction: float | None = None
    peak_mem_bytes: int | None = None
    compare_ratio: float | None = None


@dataclass
class ModelRow(OrtColumns, _ModelRowColumns):
    """One (model, batch, size) case of a whole model. Times in ms per call (the whole
    batch), memory in bytes; `macs_per_image` is `model.macs(H, W)` (what it computes for one
    image), `macs` that × batch; GFLOP/s and %GEMM are from `macs`."""

    @property
    def size(self) -> str:
        return f"{self.h}x{self.w}"

    @property
    def key(self) -> tuple[Any, ...]:
        """The case, as --compare matches it with a row of an earlier run (row_key)."""
        return ("model", self.model, self.batch, self.h, self.w)

    @property
    def case(self) -> str:
        """The case in words, for messages."""
        return f"{self.model} batch {self.batch} {self.size}"

    def as_dict(self) -> dict[str, Any]:
        return {"size": self.size, **asdict(self)}


AnyRow = Row | ModelRow  # a row of either kind of run


def row_key(row: dict[str, Any]) -> tuple[Any, ...]:
    """The `key` of a results.json row (KeyError, TypeError or ValueError when malformed):
    a whole model's row has a `model` field, a layer row a `mechanism`."""
    if "model" in row:
        return ("model", str(row["model"]), int(row["batch"]), int(row["h"]), int(row["w"]))
    return (str(row["mechanism"]), int(row["h"]), int(row["w"]))


@dataclass
class PathResult:
    """The measurement of one path (fast or reference) of one case."""

    timing: Timing | None = None
    mem_bytes: int | None = None
    skipped: str | None = None
    error: str | None = None
    compile_seconds: float | None = None


@dataclass
class BenchResult:
    """A finished run: machine facts, configuration, the GEMM rate and the rows."""

    machine: dict[str, Any]
    config: dict[str, Any]
    gemm: dict[str, Any]
    rows: list[Row]
    wall_seconds: float = 0.0
    extras: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "schema": "lightattn-bench/1",
            "machine": self.machine,
            "config": self.config,
            "gemm": self.gemm,
            "wall_seconds": round(self.wall_seconds, 2),
            **self.extras,
            "rows": [r.as_dict() for r in self.rows],
        }


def fill_row(row: Row, fast: PathResult, ref: PathResult | None, config: BenchConfig) -> None:
    """Put the two paths' measurements and the derived rates into the row."""
    notes = fill_path(row, fast, config)
    if ref is not None and ref.timing is not None:
        t = ref.timing
        row.ref_time_ms, row.ref_iqr_ms = t.median * 1e3, t.iqr * 1e3
        row.ref_min_ms, row.ref_max_ms = t.best * 1e3, t.worst * 1e3
        row.ref_runs, row.ref_peak_mem_bytes = t.runs, ref.mem_bytes
        if row.time_ms:
            row.ref_speedup = row.ref_time_ms / row.time_ms
    elif ref is not None:
        notes.append(f"reference {'skipped' if ref.skipped else 'failed'}: "
                     f"{ref.skipped or ref.error}")  # fmt: skip
    else:
        notes.append("reference not run (--no-reference)")
    row.note = "; ".join(n for n in notes if n)


def fill_path(row: AnyRow, fast: PathResult, config: BenchConfig) -> list[str]:
    """The fast path's measurement into the row, or its status when it did not run; the
    notes it gives (why not, or the compile time)."""
    if fast.timing is None:
        row.status = "skipped" if fast.skipped else "error"
        return [fast.skipped or fast.error or ""]
    if isinstance(row, ModelRow):
        fill_model(row, fast, config)
    else:
        fill_fast(row, fast, config)
    if fast.compile_seconds is not None:
        return [f"compile {fast.compile_seconds:.1f} s"]
    return []


def fill_times(row: AnyRow, fast: PathResult) -> Timing:
    """The times of a measured path, images per second and peak memory into the row."""
    t = fast.timing
    row.time_ms, row.min_ms, row.max_ms = t.median * 1e3, t.best * 1e3, t.worst * 1e3
    row.q1_ms, row.q3_ms, row.iqr_ms, row.runs = t.q1 * 1e3, t.q3 * 1e3, t.iqr * 1e3, t.runs
    row.images_per_s = row.batch / t.median
    row.peak_mem_bytes = fast.mem_bytes
    return t


def fill_fast(row: Row, fast: PathResult, config: BenchConfig) -> None:
    """The fast path's times and the rates derived from them."""
    t = fill_times(row, fast)
    if row.useful_macs:
        row.gflops = config.flops_per_mac * row.useful_macs / t.median / 1e9
    if row.macs:
        row.computed_gflops = config.flops_per_mac * row.macs / t.median / 1e9


def fill_model(row: ModelRow, fast: PathResult, config: BenchConfig) -> None:
    """A whole model's times, its img/s range (slowest and fastest run) and GFLOP/s."""
    t = fill_times(row, fast)
    row.min_images_per_s, row.max_images_per_s = row.batch / t.worst, row.batch / t.best
    if row.macs:
        row.gflops = config.flops_per_mac * row.macs / t.median / 1e9


def add_baseline_ratios(rows: list[Row]) -> None:
    """vs_baseline = baseline time / this time at the same size (> 1: faster than mhsa)."""
    base = {r.size: r.time_ms for r in rows if r.mechanism == BASELINE and r.time_ms}
    for r in rows:
        if r.time_ms and r.size in base:
            r.vs_baseline = base[r.size] / r.time_ms


def add_gemm_fractions(rows: list[AnyRow], gemm_gflops: float) -> None:
    """gemm_fraction = achieved GFLOP/s / this machine's GEMM GFLOP/s."""
    for r in rows:
        if r.gflops is not None:
            r.gemm_fraction = r.gflops / gemm_gflops


def config_dict(config: BenchConfig) -> dict[str, Any]:
    """The configuration as stored in results.json."""
    out = asdict(config)
    out["sizes"] = [f"{h}x{w}" for h, w in config.sizes]
    out["mode"] = config.mode
    out["heads"] = config.resolved_heads
    out["heads_default"] = config.heads is None
    out["threads"] = config.threads or torch.get_num_threads()
    return out


def model_config_dict(config: ModelBenchConfig) -> dict[str, Any]:
    """A whole-model run's configuration as stored in results.json."""
    out: dict[str, Any] = {k: getattr(config, k) for k in MODEL_CONFIG_FIELDS}
    out["sizes"] = [f"{h}x{w}" for h, w in config.sizes]
    out["mode"] = config.mode
    out["threads"] = config.threads or torch.get_num_threads()
    return out
