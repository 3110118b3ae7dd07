"""`lightattn bench --models`: whole models timed with the layer benchmark's machinery (the
same timing, peak memory, skip rule, results files and --fail-if-slower). Tiny models keep it
fast; the numbers are asserted with an injected fake clock."""

from __future__ import annotations

import contextlib
import io
import json

import pytest
import torch
from rich.console import Console
from torch import nn

import lightattn
from lightattn.bench import compare, measure, report
from lightattn.bench import runner as runner_mod
from lightattn.bench.models import make_model_runner, resolve_models, run_model_benchmark
from lightattn.bench.results import ModelBenchConfig
from lightattn.cli import main
from lightattn.cli.bench_cmd import fail_code
from lightattn.models import _registry
from lightattn.models._registry import ModelEntry

TICK = 0.010  # seconds the fake clock advances on every read
COSTS = (0.010, 0.020, 0.030, 0.040, 0.050, 0.060, 0.070)  # 7 runs: each cost timed once
TINY_SWIN = {"embed_dim": 16, "depths": (1, 1, 1, 1), "num_heads": (1, 1, 1, 1),
             "window_size": 2, "num_classes": 10}  # fmt: skip
# one torch thread: tiny calls are no faster with two, and much slower on a busy machine
FAST = ["--sizes", "16", "--min-time", "0", "--min-runs", "3", "--threads", "1"]


class FakeClock:
    """perf_counter stand-in: advances by TICK on every read, and by what a call costs."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += TICK
        return self.now - TICK


class Clocked(nn.Module):
    """A model whose every call advances `clock` by the next of `costs` (cycled)."""

    def __init__(self, model: nn.Module, clock: FakeClock, costs: tuple[float, ...]) -> None:
        super().__init__()
        self.model, self.clock, self.costs, self.calls = model, clock, costs, 0
        self.in_chans = model.in_chans

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.clock.now += self.costs[self.calls % len(self.costs)]
        self.calls += 1
        return self.model(x)

    def macs(self, h: int, w: int) -> int:
        return self.model.macs(h, w)


def tiny_swin() -> nn.Module:
    return lightattn.create_model("swin", **TINY_SWIN)


@pytest.fixture(autouse=True)
def fixed_gemm(monkeypatch) -> None:
    """A fixed 100 GFLOP/s GEMM rate instead of measuring it (a second per run)."""
    monkeypatch.setattr(
        runner_mod, "gemm_rate", lambda device, dtype, timer, size: (100e9, 1024, None)
    )


@pytest.fixture(autouse=True)
def keep_threads():
    """Runs here set one torch thread (threads=1, --threads 1); restore the count after."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny_registered(monkeypatch) -> str:
    """A tiny Swin registered as the named model "tiny_swin" for the duration of a test."""
    monkeypatch.setitem(_registry._MODELS, "tiny_swin", ModelEntry("tiny_swin", "swin", TINY_SWIN))
    return "tiny_swin"


def clocked_run(costs: tuple[float, ...], batches=(1, 2), **kwargs):
    """A run of one tiny model "tiny" whose calls cost TICK + `costs` on a fake clock."""
    clock = FakeClock()
    config = ModelBenchConfig(
        models=["tiny"], sizes=[(16, 16)], batches=list(batches), min_time=0.0, min_runs=7,
        time_budget=0, threads=1, **kwargs,
        factories={"tiny": lambda: Clocked(tiny_swin(), clock, costs)},
    )  # fmt: skip
    runner = make_model_runner(config, timer=measure.wall_timer(clock=clock))
    return run_model_benchmark(config, runner=runner), runner


def run_main(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def test_json_numbers_from_a_known_clock():
    """Runs of 20..80 ms (TICK + COSTS), median 50 ms, at batch 1 and 2: ms, min/max,
    img/s and its range, MACs = model.macs per image and × batch, GFLOP/s, %GEMM."""
    result, runner = clocked_run(COSTS)
    data = json.loads(report.to_json(result))
    macs = tiny_swin().macs(16, 16)
    assert [(r["model"], r["batch"], r["size"]) for r in data["rows"]] == [
        ("tiny", 1, "16x16"), ("tiny", 2, "16x16")]  # fmt: skip
    for r in data["rows"]:
        b = r["batch"]
        assert r["status"] == "ok" and r["runs"] == 7, r["note"]
        assert (r["time_ms"], r["min_ms"], r["max_ms"]) == pytest.approx((50, 20, 80))
        assert r["images_per_s"] == pytest.approx(b / 0.050)
        assert (r["min_images_per_s"], r["max_images_per_s"]) == pytest.approx((b / 0.08, b / 0.02))
        assert r["macs_per_image"] == macs and r["macs"] == macs * b
        assert r["gflops"] == pytest.approx(2 * macs * b / 0.050 / 1e9)
        assert r["gemm_fraction"] == pytest.approx(r["gflops"] / 100)
        assert r["peak_mem_bytes"] > 0 and r["params"] == 310_542
        assert r["mode"] == "forward" and r["layout"] == "nchw" and r["family"] == ""
    assert not runner.modules["tiny"].training
    assert data["config"]["models"] == ["tiny"] and data["config"]["batches"] == [1, 2]
    assert "dim" not in data["config"] and "attn" not in data["config"]
    assert "load_average_at_start" in data["machine"] and "load_average_at_end" in data["machine"]


def test_the_skip_rule_and_its_reasons_apply_to_models():
    result, _ = clocked_run(COSTS, max_memory_gb=1e-9)
    for row in result.rows:
        assert row.status == "skipped" and "GB memory limit" in row.note
        assert row.time_ms is None
    result, _ = clocked_run((3.0,), batches=(1,), max_case_seconds=5.0)
    assert result.rows[0].status == "skipped" and "5 s case limit" in result.rows[0].note


def test_fail_if_slower_on_model_rows():
    """An earlier run at 20..80 ms per call; now every call costs 100 ms more."""
    old_result, _ = clocked_run(COSTS)
    old = json.loads(report.to_json(old_result))
    slower, _ = clocked_run(tuple(c + 0.1 for c in COSTS))
    assert compare.apply_compare(slower.rows, old) == 2
    assert [r.compare_ratio for r in slower.rows] == pytest.approx([3.0, 3.0])
    err = Console(file=io.StringIO(), width=200)
    assert fail_code(slower, 10, old, err) == 1
    assert "tiny batch 2 16x16 3.00×" in err.file.getvalue()
    assert compare.apply_compare(old_result.rows, old) == 2  # the same times
    assert fail_code(old_result, 10, old, Console(file=io.StringIO())) == 0
    # a case is matched with its own batch only, never with a layer row of the same size
    layer_row = {"mechanism": "tiny", "h": 16, "w": 16, "batch": 2, "time_ms": 1e-6}
    only_b1 = {**old, "rows": [r for r in old["rows"] if r["batch"] == 1] + [layer_row]}
    for r in slower.rows:
        r.compare_ratio = None
    assert compare.apply_compare(slower.rows, only_b1) == 1
    assert [r.compare_ratio is not None for r in slower.rows] == [True, False]


def test_cli_writes_the_layer_file_formats_and_gates(tiny_registered, tmp_path):
    out = tmp_path / "run"
    code, stdout, stderr = run_main(["bench", "--models", tiny_registered, *FAST,
                                     "--batch", "1", "2", "--out", str(out), "--json"])  # fmt: skip
    assert code == 0, stderr
    data = json.loads(stdout)
    assert sorted(p.name for p in out.iterdir()) == ["results.csv", "results.json", "results.md"]
    assert json.loads((out / "results.json").read_text())["rows"] == data["rows"]
    macs = tiny_swin().macs(16, 16)
    for r in data["rows"]:
        assert r["family"] == "swin" and r["macs_per_image"] == macs and r["runs"] >= 3
        assert r["min_ms"] <= r["time_ms"] <= r["max_ms"]
    md = (out / "results.md").read_text()
    assert "| model | batch | size | img/s | img/s min–max | ms | peak MB | params |" in md
    assert f"| {report.fmt_num(macs / 1e9)} |" in md and "torch threads" in md
    assert "GMACs/img" in stderr  # the table goes to stderr with --json
    path = tmp_path / "old.json"
    for old_ms, expected in ((1e-6, 1), (1e9, 0)):
        old = {**data, "rows": [{**r, "time_ms": old_ms, "max_ms": old_ms} for r in data["rows"]]}
        path.write_text(json.dumps(old))
        code, _, stderr = run_main(["bench", "--models", tiny_registered, *FAST, "--batch",
                                    "2", "--compare", str(path), "--fail-if-slower",
                                    "10"])  # fmt: skip
        assert code == expected, stderr
        assert "matched no" not in stderr
        assert ("slower by more than 10%" in stderr) is (expected == 1)
        assert ("tiny_swin batch 2 16x16" in stderr) is (expected == 1)


def test_models_all_and_duplicates():
    assert resolve_models(["all"]) == lightattn.list_models()
    assert resolve_models(["swin_t", "pvt_v2_b0", "swin_t"]) == ["swin_t", "pvt_v2_b0"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--models", "swin_t", "swin_x"], "unknown model(s) ['swin_x']; known: ['acmix_swin_t'"),
        (["--models", "swin_t", "--attn", "hilo"], "--attn cannot be combined with --models"),
        (["--models", "swin_t", "--dim", "32"], "--dim cannot be combined with --models"),
        (["--models", "swin_t", "--layout", "tokens"], "--layout tokens does not apply"),
        (["--models", "swin_t", "--fail-if-slower", "5"], "--fail-if-slower needs --compare"),
        (["--batch", "1", "32"], "--batch takes one value (several only with --models)"),
    ],
)
def test_bad_model_arguments_exit_2_with_one_line(argv, message):
    code, stdout, stderr = run_main(["bench", *argv])
    assert code == 2 and stdout == ""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lightattn bench: error: "), stderr
    assert message in lines[0]
