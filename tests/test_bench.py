"""The benchmark library: statistics, memory accounting, the skip rule, fits, comparisons,
the table and argument types. Timing is asserted only with an injected fake clock."""

from __future__ import annotations

import argparse
import io
import json
import re
import time

import pytest
import torch
from rich.console import Console
from torch import nn

import lightattn
from lightattn.bench import compare, estimate, machine, measure, memory, report
from lightattn.bench import runner as runner_mod
from lightattn.bench.plots import fit_exponent
from lightattn.bench.results import BenchConfig, BenchResult, Row
from lightattn.bench.runner import make_runner, run_benchmark
from lightattn.cli.args import parse_kwarg, parse_literal, parse_size
from lightattn.layers import AttentionBase, _registry

TICK = 0.010  # seconds the fake clock advances on every read


class FakeClock:
    """perf_counter stand-in: advances by TICK on every read, and by whatever a FakeAttention
    call costs."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += TICK
        return self.now - TICK


class FakeAttention(AttentionBase):
    """A linear layer with MACs and per-call costs chosen by the test: useful MACs
    `useful` per token, computed `2 * useful` per token (+ `train_pairs` per token pair in
    training mode); the reference path computes `ref_pairs` per token pair when set. Each
    call advances `clock` by the next of `costs` (seconds, cycled) and records its input."""

    name = "fake"
    clock: FakeClock | None = None

    def __init__(self, dim, num_heads=None, useful=250_000, train_pairs=0, ref_pairs=0,
                 costs=(0.0,), reference=False):  # fmt: skip
        super().__init__(dim, num_heads, reference=reference)
        self.proj = nn.Linear(dim, dim)
        self.useful, self.train_pairs, self.ref_pairs = useful, train_pairs, ref_pairs
        self.costs, self.calls, self.seen = tuple(costs), 0, []

    def forward(self, x, hw=None):
        channels_last = x.dim() == 4 and not x.is_contiguous()
        self.seen.append((tuple(x.shape), channels_last, hw))
        if self.clock is not None:
            self.clock.now += self.costs[self.calls % len(self.costs)]
        self.calls += 1
        return super().forward(x, hw)

    def forward_tokens(self, x, h, w):
        return self.proj(x)

    def macs(self, h, w):
        n = h * w
        if self.reference and self.ref_pairs:
            return self.ref_pairs * n * n
        return 2 * self.useful * n + (self.train_pairs * n * n if self.training else 0)

    def useful_macs(self, h, w):
        return self.useful * h * w


@pytest.fixture
def fake(monkeypatch) -> type[FakeAttention]:
    """FakeAttention registered as "fake" for the duration of a test."""
    monkeypatch.setitem(_registry._REGISTRY, "fake", FakeAttention)
    monkeypatch.setattr(FakeAttention, "clock", None)
    return FakeAttention


@pytest.fixture
def fixed_gemm(monkeypatch) -> None:
    """A fixed 100 GFLOP/s GEMM rate instead of measuring it, for tests that do not look at
    it (measuring takes about a second per run)."""
    monkeypatch.setattr(
        runner_mod, "gemm_rate", lambda device, dtype, timer, size: (100e9, 1024, None)
    )


def fake_runner(config: BenchConfig, fake: type[FakeAttention]) -> runner_mod.Runner:
    """A runner whose timer reads a FakeClock that the fake mechanism advances."""
    clock = FakeClock()
    fake.clock = clock
    return make_runner(config, timer=measure.wall_timer(clock=clock))


def test_timing_statistics():
    t = measure.Timing([0.4, 0.1, 0.3, 0.2, 0.5], warmup=[1.0])
    assert t.runs == 5 and t.median == pytest.approx(0.3) and t.best == pytest.approx(0.1)
    assert t.q1 == pytest.approx(0.2) and t.q3 == pytest.approx(0.4)
    assert t.iqr == pytest.approx(0.2) and t.warmup == [1.0]


def test_time_calls_warms_up_and_repeats_to_min_runs():
    calls = []
    timing = measure.time_calls(lambda: calls.append(1), min_time=0.0, min_runs=4)
    assert timing.runs == 4 and len(timing.warmup) == 2  # a quick call gets two warm-ups
    assert len(calls) == 6


def test_time_calls_counts_earlier_calls_as_warmup():
    calls = []
    timing = measure.time_calls(lambda: calls.append(1), min_time=0.0, min_runs=2, warmed=[0.1])
    assert timing.warmup == [0.1] and timing.runs == 2 and len(calls) == 2
    with pytest.raises(measure.TooSlow):
        measure.time_calls(lambda: calls.append(1), min_time=0.0, warmed=[5.0], max_seconds=9)
    assert len(calls) == 2


def test_time_calls_stops_a_case_that_is_too_slow():
    with pytest.raises(measure.TooSlow, match="3 runs would exceed the 0.01 s case limit"):
        measure.time_calls(lambda: time.sleep(0.02), min_time=1.0, min_runs=3, max_seconds=0.01)


def test_peak_of_replays_events_in_order():
    assert memory.peak_of([]) == 0
    assert memory.peak_of([100, -100, 50, 70, -50, -70]) == 120
    assert memory.peak_of([-10, 30]) == 20  # a free of older memory counts


def test_cpu_peak_sees_a_plain_allocation():
    peak = memory.peak_memory(lambda: torch.empty(1_000_000), torch.device("cpu"))
    assert 4_000_000 <= peak < 4_100_000


def test_cpu_peak_of_mhsa_reference_holds_its_weight_matrix():
    """Hand computation: the reference path materialises B·h·N² fp32 logits and weights."""
    b, heads, side = 2, 2, 28
    m = lightattn.create_attention("mhsa", 32, heads).eval()
    m.reference = True
    x = torch.randn(b, 32, side, side)
    n = side * side
    weights = b * heads * n * n * 4

    def call():
        with torch.inference_mode():
            return m(x)

    call()
    peak = memory.peak_memory(call, torch.device("cpu"))
    assert weights <= peak <= 3 * weights
    m.reference = False
    assert memory.peak_memory(call, torch.device("cpu")) < weights  # SDPA never holds it


def test_predict_seconds_follows_macs_and_never_beats_the_gemm():
    hist = [estimate.Point(100, 0.01, 1000, 10_000)]
    # MACs grow 16x for 4x tokens (quadratic): the time is predicted 16x
    assert estimate.predict_seconds(hist, 400, 160_000, 2, 1e12) == pytest.approx(0.16)
    # MACs grow linearly but the exponent is never below 1
    assert estimate.predict_seconds(hist, 400, 20_000, 2, 1e12) == pytest.approx(0.04)
    # the GEMM floor wins when the history is faster than the machine
    fast = [estimate.Point(100, 1e-9, 1000, 10_000)]
    assert estimate.predict_seconds(fast, 400, 160_000, 2, 1e9) == pytest.approx(3.2e-4)
    assert estimate.predict_seconds([], 400, 10**9, 2, 1e9) == pytest.approx(2.0)


def test_predict_memory_extrapolates_the_measured_exponent():
    assert estimate.predict_memory([], 100) is None
    hist = [estimate.Point(100, 0.1, 1_000, 1), estimate.Point(400, 0.1, 16_000, 1)]
    assert estimate.predict_memory(hist, 1600) == pytest.approx(256_000)
    flat = [estimate.Point(100, 0.1, 1_000, 1), estimate.Point(400, 0.1, 1_000, 1)]
    assert estimate.predict_memory(flat, 1600) == pytest.approx(4_000)  # at least linear


def test_case_seconds_counts_warmup_and_runs():
    # plain warm-up + profiled call + 3 runs
    assert estimate.case_seconds(1.0, 0.25, 3) == pytest.approx(5.0)
    assert estimate.case_seconds(0.01, 0.25, 3) == pytest.approx(0.27)  # 2 untimed + min_time


def test_skips_are_stated_never_silent(fixed_gemm):
    """With a tiny memory limit every case is skipped (the first one from its batch-1 probe),
    each with a reason."""
    config = BenchConfig(attn=["mhsa"], sizes=[(6, 6), (12, 12), (24, 24)], dim=16, batch=1,
                         min_time=0.0, min_runs=1, max_memory_gb=1e-6)  # fmt: skip
    rows = run_benchmark(config).rows
    assert [r.size for r in rows] == ["6x6", "12x12", "24x24"]
    for r in rows:
        assert r.status == "skipped" and r.time_ms is None
        assert "GB memory limit" in r.note and "reference skipped: estimated" in r.note


@pytest.mark.parametrize(
    ("limit", "reason"),
    [
        ({"batch": 1, "max_case_seconds": 1e-9}, "case limit"),
        # a first size of at most 1024 tokens is probed at batch 1, so the memory limit
        # applies without any history
        ({"batch": 4, "max_memory_gb": 1e-9}, "GB memory limit"),
    ],
)
def test_limits_skip_the_first_size_with_reason(fixed_gemm, limit, reason):
    config = BenchConfig(attn=["mhsa"], sizes=[(6, 6)], dim=16, min_time=0.0, min_runs=1,
                         **limit)  # fmt: skip
    (row,) = run_benchmark(config).rows
    assert row.status == "skipped" and reason in row.note


def test_fit_exponent_recovers_a_power_law():
    tokens = [196, 784, 3136, 12544]
    assert fit_exponent(tokens, [3 * n**1.5 for n in tokens]) == pytest.approx(1.5)
    assert fit_exponent([196], [1.0]) is None
    assert fit_exponent([196, 784], [1.0, None]) is None


def make_row(name: str, h: int, time_ms: float | None, min_ms: float | None = None) -> Row:
    return Row(mechanism=name, settings={}, h=h, w=h, tokens=h * h, batch=1, dim=8, heads=1,
               dtype="fp32", device="cpu", mode="forward", compiled=False, params=0, macs=1,
               time_ms=time_ms, min_ms=min_ms)  # fmt: skip


def test_compare_ratios_and_threshold():
    rows = [make_row("mhsa", 7, 3.0), make_row("window", 7, 1.0), make_row("window", 9, 2.0),
            make_row("sra", 7, None)]  # fmt: skip
    old = {"config": {"batch": 2}, "rows": [
        {"mechanism": "mhsa", "h": 7, "w": 7, "time_ms": 2.0},
        {"mechanism": "window", "h": 7, "w": 7, "time_ms": 1.0},
        {"mechanism": "sra", "h": 7, "w": 7, "time_ms": 1.0},
        {"mechanism": "window", "h": 9, "w": 9, "time_ms": None},
    ]}  # fmt: skip
    assert compare.apply_compare(rows, old) == 2
    assert [r.compare_ratio for r in rows] == [1.5, 1.0, None, None]
    assert compare.slower_than(rows, old, 40) == [rows[0]]
    assert compare.slower_than(rows, old, 60) == []
    assert compare.setting_differences({"batch": 1}, old) == ["batch: 2 -> 1"]


@pytest.mark.parametrize(
    ("new_median", "new_min", "slower"),
    [
        (13.0, 11.0, True),  # beyond the threshold, the old slowest run and the old median
        (11.5, 11.0, False),  # 15% slower, but not slower than the old run's slowest (12)
        (13.0, 9.5, False),  # some new runs as fast as the old median: noise
        (10.4, 10.2, False),  # within the 10% threshold
    ],
)
def test_fail_if_slower_is_noise_aware(new_median, new_min, slower):
    """Old run: median 10 ms, runs from 9 to 12 ms; threshold 10%."""
    old = {"rows": [{"mechanism": "mhsa", "h": 7, "w": 7, "time_ms": 10.0, "min_ms": 9.0,
                     "max_ms": 12.0}]}  # fmt: skip
    rows = [make_row("mhsa", 7, new_median, new_min)]
    assert compare.slower_than(rows, old, 10) == (rows if slower else [])


def test_fail_if_slower_without_old_spread_uses_the_median():
    """An older results.json without min/max: the old slowest run is taken as its median."""
    old = {"rows": [{"mechanism": "mhsa", "h": 7, "w": 7, "time_ms": 10.0}]}
    rows = [make_row("mhsa", 7, 11.5, 10.5)]
    assert compare.slower_than(rows, old, 10) == rows


@pytest.mark.parametrize(("text", "size"), [("14", (14, 14)), ("13x19", (13, 19)),
                                            ("2X3", (2, 3)), (" 5 x 6 ", (5, 6))])  # fmt: skip
def test_parse_size(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["0", "-3", "4x0", "x4", "4x", "abc", "1.5"])
def test_parse_size_rejects(text):
    with pytest.raises(argparse.ArgumentTypeError):
        parse_size(text)


def test_parse_kwarg_literals():
    assert parse_kwarg("hilo:alpha=0.9") == ("hilo", "alpha", 0.9)
    assert parse_kwarg("window:window_size=7") == ("window", "window_size", 7)
    assert parse_kwarg("window:shift=True") == ("window", "shift", True)
    assert parse_kwarg("sra:reduction=avg") == ("sra", "reduction", "avg")
    assert parse_kwarg("sra:reduction='conv'") == ("sra", "reduction", "conv")
    assert parse_literal("false") is False and parse_literal("(2, 3)") == (2, 3)
    for bad in ("hilo", "hilo:alpha", ":alpha=1", "hilo:1x=2"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_kwarg(bad)


def test_first_size_probe_scales_memory_by_batch():
    config = BenchConfig(attn=["mhsa"], sizes=[(6, 6)], dim=16, batch=4, reference=False)
    runner = make_runner(config)
    history: list[estimate.Point] = []
    runner._probe(runner.modules["mhsa"], history, 6, 6)
    (point,) = history
    assert point.tokens == 36 and point.macs == runner.modules["mhsa"].macs(6, 6) * 4
    assert point.mem_bytes and point.mem_bytes % 4 == 0


def test_profiled_call_time_never_decides_too_slow(fixed_gemm, monkeypatch):
    """The profiled call (slow here, like the profiler's start-up) is not the TooSlow input."""
    real = runner_mod.peak_memory

    def slow_peak(fn, device):
        time.sleep(0.3)
        return real(fn, device)

    monkeypatch.setattr(runner_mod, "peak_memory", slow_peak)
    config = BenchConfig(attn=["mhsa"], sizes=[(4, 4)], dim=16, batch=1, min_time=0.0,
                         min_runs=3, max_case_seconds=0.5, time_budget=0)  # fmt: skip
    (row,) = run_benchmark(config).rows
    assert row.status == "ok", row.note
    assert row.ref_time_ms is not None


def test_runner_warms_the_profiler_up_at_start(monkeypatch):
    calls = []
    monkeypatch.setattr(runner_mod, "peak_memory", lambda fn, device: calls.append(fn))
    make_runner(BenchConfig(attn=["mhsa"], dim=16, reference=False))
    assert len(calls) == 1


def test_time_floor_uses_the_faster_of_fp32_and_dtype_gemm():
    config = BenchConfig(attn=["mhsa"], dim=16, dtype="bf16", reference=False)
    runner = make_runner(config)
    # bf16 GEMM without a fast kernel: 1 GFLOP/s; 5 GMACs: 10 s per call at that rate,
    # 0.1 s at the fp32 one
    runner.gemm = {"fp32_gflops": 100.0, "bf16_gflops": 1.0}
    assert runner.skip_reason([], 36, 5 * 10**9) is None
    runner.gemm = {"fp32_gflops": 1.0, "bf16_gflops": 1.0}  # both slow: the floor is 1 GFLOP/s
    assert "case limit" in runner.skip_reason([], 36, 5 * 10**9)


def test_measure_gemm_sets_the_floor_from_both_rates(monkeypatch):
    rates = {torch.float32: 100e9, torch.bfloat16: 1e9}
    monkeypatch.setattr(
        runner_mod, "gemm_rate", lambda device, dtype, timer, size: (rates[dtype], 256, None)
    )
    runner = make_runner(BenchConfig(attn=["mhsa"], dim=16, dtype="bf16", reference=False))
    gemm = runner.measure_gemm()
    assert gemm["bf16_gflops"] == 1.0 and gemm["fp32_gflops"] == 100.0
    assert runner.gemm_flops == 1e9 and runner.floor_flops == 100e9


def test_gemm_size_label_names_the_best_measurement(monkeypatch):
    results = iter([(50e9, 1024, None), (60e9, 512, None)])
    monkeypatch.setattr(runner_mod, "gemm_rate", lambda device, dtype, timer, size: next(results))
    runner = make_runner(BenchConfig(attn=["mhsa"], dim=16, reference=False))
    runner.measure_gemm("start")
    gemm = runner.measure_gemm("end")
    assert gemm["fp32_gflops"] == 60.0 and gemm["fp32_size"] == 512


def test_backward_runs_backward(fixed_gemm):
    """The module is in train mode and receives gradients."""
    config = BenchConfig(attn=["mhsa"], sizes=[(6, 6)], dim=16, batch=1, min_time=0.0,
                         min_runs=1, backward=True, reference=False)  # fmt: skip
    runner = make_runner(config)
    (row,) = run_benchmark(config, runner=runner).rows
    assert row.mode == "forward+backward" and runner.modules["mhsa"].training
    params = [p for p in runner.modules["mhsa"].parameters() if p.requires_grad]
    assert params and all(p.grad is not None for p in params)


# 7 costs and 7 runs: every cost is timed once, whatever the calls before the timed runs
COSTS = (0.010, 0.020, 0.030, 0.040, 0.050, 0.060, 0.070)
GEMM_GFLOPS = 2 * 512**3 / TICK / 1e9  # the GEMM call takes TICK: 256³ -> 512³ by the rule


@pytest.mark.parametrize(("backward", "flops_per_mac"), [(False, 2), (True, 6)])
def test_json_numbers_from_a_known_clock(fake, backward, flops_per_mac):
    """Every call of the fake mechanism takes TICK + one of COSTS: runs of 20..80 ms, median
    50 ms. Batch 2 at 4x4: 2 * 16 * 250,000 = 8e6 useful MACs (16e6 computed). mhsa's calls
    cost nothing extra (TICK: 10 ms)."""
    config = BenchConfig(attn=["fake"], sizes=[(4, 4)], dim=16, batch=2, min_time=0.0,
                         min_runs=7, backward=backward, time_budget=0,
                         kwargs={"fake": {"costs": COSTS}})  # fmt: skip
    result = run_benchmark(config, runner=fake_runner(config, fake))
    data = json.loads(report.to_json(result))
    assert data["gemm"]["fp32_size"] == 512
    assert data["gemm"]["fp32_gflops"] == pytest.approx(GEMM_GFLOPS)
    mhsa, row = data["rows"]
    assert (row["time_ms"], row["min_ms"], row["max_ms"]) == pytest.approx((50, 20, 80))
    assert row["runs"] == 7 and row["ref_runs"] == 7
    assert row["useful_macs"] == 8_000_000 and row["macs"] == 16_000_000
    assert row["images_per_s"] == pytest.approx(2 / 0.050)
    assert row["gflops"] == pytest.approx(flops_per_mac * 8e6 / 0.050 / 1e9)
    assert row["computed_gflops"] == pytest.approx(flops_per_mac * 16e6 / 0.050 / 1e9)
    assert row["gemm_fraction"] == pytest.approx(flops_per_mac * 8e6 / 0.050 / 1e9 / GEMM_GFLOPS)
    assert (row["ref_time_ms"], row["ref_min_ms"], row["ref_max_ms"]) == pytest.approx((50, 20, 80))
    assert mhsa["time_ms"] == pytest.approx(10) and row["vs_baseline"] == pytest.approx(0.2)


def test_reference_skip_estimate_uses_its_own_macs(fixed_gemm, fake):
    """Fast path: MACs linear in N; reference: N². Every call takes 10 ms. From 4x4 to 8x8
    (4x the tokens) the fast path is predicted 4 x 10 ms, the reference 16 x 10 ms: with 1
    run, 3 calls per case, 0.12 s and 0.48 s against a 0.3 s case limit."""
    config = BenchConfig(attn=["fake"], sizes=[(4, 4), (8, 8)], dim=16, batch=1, min_time=0.0,
                         min_runs=1, max_case_seconds=0.3, time_budget=0,
                         kwargs={"fake": {"ref_pairs": 1000}})  # fmt: skip
    runner = fake_runner(config, fake)
    rows = run_benchmark(config, runner=runner).rows
    small, large = (r for r in rows if r.mechanism == "fake")
    assert small.ref_macs == 1000 * 16**2 and large.ref_macs == 1000 * 64**2
    assert large.status == "ok" and large.ref_time_ms is None
    assert "reference skipped: estimated 0.5 s (one call ≈ 0.16 s) > 0.3 s case limit" in large.note
    history = runner.history[("fake", "reference")]
    assert [p.macs for p in history] == [1000 * 16**2]


def test_backward_counts_training_only_macs(fixed_gemm, fake):
    """In train mode (--backward) the row, the GFLOP/s and the skip rule use the MACs the
    module reports in train mode (castling counts its aux branch there)."""
    config = BenchConfig(attn=["fake"], sizes=[(4, 4)], dim=16, batch=1, min_time=0.0,
                         min_runs=1, backward=True, reference=False, time_budget=0,
                         kwargs={"fake": {"train_pairs": 100}})  # fmt: skip
    runner = fake_runner(config, fake)
    (_, row) = run_benchmark(config, runner=runner).rows
    assert row.macs == 2 * 250_000 * 16 + 100 * 16**2
    assert [p.macs for p in runner.history[("fake", "fast")]] == [row.macs]


@pytest.mark.parametrize(("aux_weight", "noted"), [(1.0, True), (0.0, False)])
def test_backward_castling_runs_and_labels_its_aux_branch(fixed_gemm, aux_weight, noted):
    config = BenchConfig(attn=["castling"], sizes=[(4, 4)], dim=16, batch=1, min_time=0.0,
                         min_runs=1, backward=True, reference=False,
                         kwargs={"castling": {"aux_weight": aux_weight}})  # fmt: skip
    runner = make_runner(config)
    module = runner.modules["castling"]
    mhsa, row = run_benchmark(config, runner=runner).rows
    assert module.training and row.macs == module.macs(4, 4)
    assert ("incl. training-only aux branch" in row.note) is noted
    assert "aux" not in mhsa.note
    forward = BenchConfig(attn=["castling"], sizes=[(4, 4)], dim=16, batch=1, min_time=0.0,
                          min_runs=1, reference=False)  # fmt: skip
    assert "aux" not in run_benchmark(forward).rows[1].note


@pytest.mark.parametrize(
    ("layout", "shape", "channels_last", "hw"),
    [("nchw", (2, 16, 3, 5), False, None), ("channels_last", (2, 16, 3, 5), True, None),
     ("tokens", (2, 15, 16), False, (3, 5))],
)  # fmt: skip
def test_layout_reaches_the_module(fixed_gemm, fake, layout, shape, channels_last, hw):
    config = BenchConfig(attn=["fake"], sizes=[(3, 5)], dim=16, batch=2, min_time=0.0,
                         min_runs=1, reference=False, layout=layout)  # fmt: skip
    runner = make_runner(config)
    rows = run_benchmark(config, runner=runner).rows
    assert {r.layout for r in rows} == {layout}
    assert runner.modules["fake"].seen[-1] == (shape, channels_last, hw)


def test_useful_and_computed_macs_of_a_padded_window(fixed_gemm):
    """A 9x9 map in 7x7 windows is padded to 14x14: four windows computed, 81 tokens useful."""
    config = BenchConfig(attn=["window"], sizes=[(9, 9)], dim=16, batch=1, min_time=0.0,
                         min_runs=1, reference=False)  # fmt: skip
    row = run_benchmark(config).rows[1]
    module = lightattn.create_attention("window", 16)
    assert row.macs == module.macs(9, 9) and row.useful_macs == module.useful_macs(9, 9)
    assert row.useful_macs < row.macs
    assert row.gflops < row.computed_gflops


def test_default_run_has_the_shifted_window_variant():
    config = BenchConfig(sizes=[(4, 4)])
    assert "window+shift" in runner_mod.mechanism_names(config)
    assert config.attention_of("window+shift") == ("window", {"shift": True})
    config.kwargs = {"window+shift": {"window_size": 2}}
    assert config.attention_of("window+shift") == ("window", {"shift": True, "window_size": 2})
    assert runner_mod.mechanism_names(BenchConfig(attn=["window"])) == ["mhsa", "window"]


def test_defaults_time_at_least_seven_runs():
    assert BenchConfig().min_runs >= 7


def test_cuda_event_timer_reads_the_events():
    """Events recorded around the call (after a synchronisation); elapsed_time is in ms."""
    log = []

    class Event:
        def record(self):
            log.append(("record", self))

        def synchronize(self):
            log.append(("synchronize", self))

        def elapsed_time(self, end):
            return 250.0

    timer = measure.cuda_event_timer(Event, lambda: log.append(("sync", None)))
    assert timer(lambda: log.append(("fn", None))) == 0.25
    steps = [step for step, _ in log]
    assert steps == ["sync", "record", "fn", "record", "synchronize"]
    assert log[1][1] is not log[3][1] and log[3][1] is log[4][1]


def test_cuda_timer_and_gemm_on_a_fake_gpu(monkeypatch):
    """On a CUDA device: torch.cuda.Event(enable_timing=True) times the call, and the GEMM
    rate is measured at 4096³ with at least 10 runs."""
    made = []

    class Event:
        def __init__(self, enable_timing=False):
            made.append(enable_timing)

        def record(self):
            pass

        def synchronize(self):
            pass

        def elapsed_time(self, end):
            return 500.0

    monkeypatch.setattr(torch.cuda, "Event", Event)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: None)
    gpu = torch.device("cuda")
    timer = machine.make_timer(gpu)
    assert timer(lambda: None) == 0.5 and made == [True, True]
    sizes = []
    monkeypatch.setattr(machine, "gemm_call", lambda d, t, size: sizes.append(size) or None)
    rate, size, timing = machine.gemm_rate(gpu, torch.float32, lambda fn: 0.5)
    assert size == 4096 and sizes == [4096] and timing.runs >= 10
    assert rate == pytest.approx(2 * 4096**3 / 0.5)


def table_result(rows: list[Row]) -> BenchResult:
    machine_facts = {
        "cpu": "AMD EPYC",
        "usable_cores": 2,
        "threads": 2,
        "torch": "2.13.0",
        "device": "cpu",
        "dtype": "fp32",
        "date": "2026-11-23T00:00:00",
    }
    config = {"dim": 64, "heads": 2, "heads_default": True, "batch": 8, "mode": "forward",
              "compile": False, "dtype": "fp32", "layout": "nchw", "min_runs": 7,
              "min_time": 0.25}  # fmt: skip
    return BenchResult(machine_facts, config, {"fp32_gflops": 178.7, "fp32_size": 1024}, rows)


def big_row(name: str, size: int, note: str) -> Row:
    row = make_row(name, size, 3161.0, 3012.5)
    row.max_ms, row.useful_macs, row.macs, row.images_per_s = 3333.3, 163 * 10**9, 163 * 10**9, 2.53
    row.gflops, row.gemm_fraction, row.peak_mem_bytes = 103.4, 0.58, 128_456_789
    row.ref_speedup, row.vs_baseline, row.note = 52.72, 47.31, note
    return row


def test_table_fits_100_columns_without_splitting_numbers():
    long_note = "reference skipped: estimated 19.2 GB > 4 GB memory limit; " * 3
    names = ["mhsa", "window+shift", "deformable", "castling"]
    rows = [big_row(n, s, long_note + n) for s in (56, 112) for n in names]
    out = io.StringIO()
    report.print_table(table_result(rows), Console(file=out, width=100))
    lines = out.getvalue().splitlines()
    assert max(len(line) for line in lines) <= 100
    for r in rows:
        (line,) = [x for x in lines if re.search(rf"\b{re.escape(r.mechanism)}\s+{r.size}\b", x)]
        for cell in ("3,161", "3,012", "3,333", "163", "2.53", "58%", "128", "52.72×", "47.31×"):
            assert cell in line, (cell, line)
    body = [x for x in lines if x.strip() and not x.startswith("[")]
    assert len(body) <= len(rows) + 12  # one line per row: title, header, rule, caption
    footnotes = [x for x in lines if x.startswith("[")]
    assert len(footnotes) == len(names) and footnotes[0].startswith("[1] reference skipped")


def test_wide_table_has_every_column():
    result = table_result([big_row("mhsa", 56, "")])
    compact = report.columns(result.rows)
    wide = report.columns(result.rows, wide=True)
    headers = [c.header for c in wide]
    assert len(wide) > len(compact) and {c.header for c in compact} < set(headers)
    assert "computed GMACs" in headers and "ref ms" in headers and "GMACs" in headers


def test_compare_lost_cases_and_kwargs_differences():
    rows = [make_row("mhsa", 7, 3.0), make_row("window", 7, None)]
    rows[1].status = "skipped"
    old = {"config": {"kwargs": {"window": {"window_size": [2, 3]}}, "threads": 4},
           "rows": [{"mechanism": "window", "h": 7, "w": 7, "time_ms": 1.0}]}  # fmt: skip
    assert compare.lost_cases(rows, old) == [rows[1]]
    same = {"kwargs": {"window": {"window_size": (2, 3)}}, "threads": 4}
    assert compare.setting_differences(same, old) == []
    diffs = compare.setting_differences({"kwargs": {}, "threads": 2}, old)
    assert diffs == ["kwargs: {'window': {'window_size': [2, 3]}} -> {}", "threads: 4 -> 2"]


@pytest.mark.parametrize("text", ["inf", "-inf", "nan", "Infinity"])
def test_numeric_options_reject_non_finite(text):
    from lightattn.cli.args import non_negative_float

    with pytest.raises(argparse.ArgumentTypeError, match="finite"):
        non_negative_float(text)
