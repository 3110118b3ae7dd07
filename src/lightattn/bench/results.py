"""What a run is (BenchConfig) and what it produces (Row, BenchResult), with the derived
columns filled in from the measurements."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from .measure import Timing

BASELINE = "mhsa"
DEFAULT_SIZES = [(14, 14), (28, 28), (56, 56), (112, 112)]


@dataclass
class BenchConfig:
    """Everything that defines a benchmark run (the CLI's options, validated)."""

    attn: list[str] = field(default_factory=list)
    sizes: list[tuple[int, int]] = field(default_factory=lambda: list(DEFAULT_SIZES))
    dim: int = 64
    heads: int = 2
    batch: int = 8
    dtype: str = "fp32"
    device: str = "cpu"
    backward: bool = False
    compile: bool = False
    kwargs: dict[str, dict[str, Any]] = field(default_factory=dict)
    min_time: float = 0.25
    min_runs: int = 3
    reference: bool = True
    max_case_seconds: float = 20.0
    max_memory_gb: float = 4.0
    time_budget: float = 160.0
    threads: int | None = None
    seed: int = 0

    @property
    def mode(self) -> str:
        return "forward+backward" if self.backward else "forward"

    @property
    def flops_per_mac(self) -> float:
        """FLOPs per forward MAC: 2, or 6 with backward (backward ≈ 2× forward)."""
        return 6.0 if self.backward else 2.0


@dataclass
class Row:
    """One (mechanism, size) case. Times in ms per call (the whole batch), memory in bytes."""

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
    status: str = "ok"
    note: str = ""
    time_ms: float | None = None
    q1_ms: float | None = None
    q3_ms: float | None = None
    iqr_ms: float | None = None
    runs: int = 0
    images_per_s: float | None = None
    gflops: float | None = None
    gemm_fraction: float | None = None
    peak_mem_bytes: int | None = None
    ref_time_ms: float | None = None
    ref_iqr_ms: float | None = None
    ref_runs: int = 0
    ref_peak_mem_bytes: int | None = None
    ref_speedup: float | None = None
    vs_baseline: float | None = None
    compare_ratio: float | None = None

    @property
    def size(self) -> str:
        return f"{self.h}x{self.w}"

    def as_dict(self) -> dict[str, Any]:
        return {"size": self.size, **asdict(self)}


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
    notes = []
    if fast.timing is not None:
        t = fast.timing
        row.time_ms, row.q1_ms, row.q3_ms = t.median * 1e3, t.q1 * 1e3, t.q3 * 1e3
        row.iqr_ms, row.runs = t.iqr * 1e3, t.runs
        row.images_per_s = row.batch / t.median
        row.peak_mem_bytes = fast.mem_bytes
        if row.macs:
            row.gflops = config.flops_per_mac * row.macs / t.median / 1e9
        if fast.compile_seconds is not None:
            notes.append(f"compile {fast.compile_seconds:.1f} s")
    else:
        row.status = "skipped" if fast.skipped else "error"
        notes.append(fast.skipped or fast.error or "")
    if ref is not None and ref.timing is not None:
        row.ref_time_ms, row.ref_iqr_ms = ref.timing.median * 1e3, ref.timing.iqr * 1e3
        row.ref_runs, row.ref_peak_mem_bytes = ref.timing.runs, ref.mem_bytes
        if row.time_ms:
            row.ref_speedup = row.ref_time_ms / row.time_ms
    elif ref is not None:
        notes.append(f"reference {'skipped' if ref.skipped else 'failed'}: "
                     f"{ref.skipped or ref.error}")  # fmt: skip
    else:
        notes.append("reference not run (--no-reference)")
    row.note = "; ".join(n for n in notes if n)


def add_baseline_ratios(rows: list[Row]) -> None:
    """vs_baseline = baseline time / this time at the same size (> 1: faster than mhsa)."""
    base = {r.size: r.time_ms for r in rows if r.mechanism == BASELINE and r.time_ms}
    for r in rows:
        if r.time_ms and r.size in base:
            r.vs_baseline = base[r.size] / r.time_ms


def add_gemm_fractions(rows: list[Row], gemm_gflops: float) -> None:
    """gemm_fraction = achieved GFLOP/s / this machine's GEMM GFLOP/s."""
    for r in rows:
        if r.gflops is not None:
            r.gemm_fraction = r.gflops / gemm_gflops


def config_dict(config: BenchConfig) -> dict[str, Any]:
    """The configuration as stored in results.json."""
    out = asdict(config)
    out["sizes"] = [f"{h}x{w}" for h, w in config.sizes]
    out["mode"] = config.mode
    out["threads"] = config.threads or torch.get_num_threads()
    return out
