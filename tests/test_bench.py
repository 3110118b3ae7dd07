"""The benchmark library: statistics, memory accounting, the skip rule, fits, comparisons and
argument types (no timing assertions)."""

from __future__ import annotations

import argparse
import time

import pytest
import torch

import lightattn
from lightattn.bench import compare, estimate, measure, memory
from lightattn.bench import runner as runner_mod
from lightattn.bench.plots import fit_exponent
from lightattn.bench.results import BenchConfig, Row
from lightattn.bench.runner import make_runner, run_benchmark
from lightattn.cli.args import parse_kwarg, parse_literal, parse_size


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


def test_skips_are_stated_never_silent():
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
def test_limits_skip_the_first_size_with_reason(limit, reason):
    config = BenchConfig(attn=["mhsa"], sizes=[(6, 6)], dim=16, min_time=0.0, min_runs=1,
                         **limit)  # fmt: skip
    (row,) = run_benchmark(config).rows
    assert row.status == "skipped" and reason in row.note


def test_fit_exponent_recovers_a_power_law():
    tokens = [196, 784, 3136, 12544]
    assert fit_exponent(tokens, [3 * n**1.5 for n in tokens]) == pytest.approx(1.5)
    assert fit_exponent([196], [1.0]) is None
    assert fit_exponent([196, 784], [1.0, None]) is None


def make_row(name: str, h: int, time_ms: float | None) -> Row:
    return Row(mechanism=name, settings={}, h=h, w=h, tokens=h * h, batch=1, dim=8, heads=1,
               dtype="fp32", device="cpu", mode="forward", compiled=False, params=0, macs=1,
               time_ms=time_ms)  # fmt: skip


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
    assert compare.slower_than(rows, 40) == [rows[0]]
    assert compare.slower_than(rows, 60) == []
    assert compare.setting_differences({"batch": 1}, old) == ["batch: 2 -> 1"]


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


def test_profiled_call_time_never_decides_too_slow(monkeypatch):
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
        runner_mod, "gemm_rate", lambda device, dtype, size: (rates[dtype], 256, None)
    )
    runner = make_runner(BenchConfig(attn=["mhsa"], dim=16, dtype="bf16", reference=False))
    gemm = runner.measure_gemm()
    assert gemm["bf16_gflops"] == 1.0 and gemm["fp32_gflops"] == 100.0
    assert runner.gemm_flops == 1e9 and runner.floor_flops == 100e9


def test_gemm_size_label_names_the_best_measurement(monkeypatch):
    results = iter([(50e9, 1024, None), (60e9, 512, None)])
    monkeypatch.setattr(runner_mod, "gemm_rate", lambda device, dtype, size: next(results))
    runner = make_runner(BenchConfig(attn=["mhsa"], dim=16, reference=False))
    runner.measure_gemm("start")
    gemm = runner.measure_gemm("end")
    assert gemm["fp32_gflops"] == 60.0 and gemm["fp32_size"] == 512


def test_backward_runs_backward():
    """The module receives gradients and the rate counts 3x the forward MACs."""
    config = BenchConfig(attn=["mhsa"], sizes=[(6, 6)], dim=16, batch=1, min_time=0.0,
                         min_runs=1, backward=True, reference=False)  # fmt: skip
    runner = make_runner(config)
    (row,) = run_benchmark(config, runner=runner).rows
    assert row.mode == "forward+backward"
    params = [p for p in runner.modules["mhsa"].parameters() if p.requires_grad]
    assert params and all(p.grad is not None for p in params)
    assert row.gflops == pytest.approx(6 * row.macs / (row.time_ms / 1e3) / 1e9)


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
