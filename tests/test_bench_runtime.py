"""`lightattn bench --runtime onnxruntime`: each mechanism (or model) exported once and timed
in onnxruntime beside eager at every size; a failed export is its rows' note; the default
run stays eager only."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from lightattn.bench import runner as runner_mod
from lightattn.bench.machine import BenchError
from lightattn.bench.models import make_model_runner
from lightattn.bench.report import markdown
from lightattn.bench.results import BenchConfig, ModelBenchConfig
from lightattn.bench.runner import make_runner, run_benchmark
from lightattn.cli import main
from lightattn.export import onnx as export_onnx_mod
from lightattn.layers import AttentionBase
from lightattn.layers.linear import LinearAttention

QUICK = {"min_time": 0.0, "min_runs": 2, "reference": False}


@pytest.fixture(autouse=True)
def setup(monkeypatch):
    """One thread and a fixed GEMM rate (measuring it takes a second per run)."""
    torch.set_num_threads(1)
    monkeypatch.setattr(
        runner_mod, "gemm_rate", lambda device, dtype, timer, size: (100e9, 1024, None)
    )


@pytest.fixture
def exports(monkeypatch) -> list[str]:
    """The mechanisms (class names of other modules) exported; linear's export fails."""
    real, seen = export_onnx_mod.export_onnx, []

    def export(module, example, path, **kwargs):
        seen.append(module.name if isinstance(module, AttentionBase) else type(module).__name__)
        if isinstance(module, LinearAttention):
            raise export_onnx_mod.ExportError("torch.export failed: a size decision")
        return real(module, example, path, **kwargs)

    monkeypatch.setattr(export_onnx_mod, "export_onnx", export)
    return seen


def test_ort_columns_beside_eager_and_a_failed_export_in_its_rows(exports, capsys):
    argv = ["bench", "--attn", "linear", "--sizes", "4", "5x3", "--dim", "16", "--batch", "2",
            "--min-time", "0", "--min-runs", "2", "--no-reference", "--runtime",
            "onnxruntime", "--json"]  # fmt: skip
    assert main(argv) == 0
    out, err = capsys.readouterr()
    result = json.loads(out)
    assert result["config"]["runtime"] == "onnxruntime"
    assert sorted(exports) == ["linear", "mhsa"]  # once each, for both sizes
    rows = {(r["mechanism"], r["size"]): r for r in result["rows"]}
    assert set(rows) == {(m, s) for m in ("mhsa", "linear") for s in ("5x3", "4x4")}
    for size in ("5x3", "4x4"):
        mhsa, linear = rows["mhsa", size], rows["linear", size]
        assert mhsa["runtime"] == "onnxruntime" and mhsa["ort_runs"] >= 2
        assert mhsa["ort_vs_eager"] == pytest.approx(mhsa["ort_time_ms"] / mhsa["time_ms"])
        assert mhsa["ort_max_abs_diff"] <= 1e-4
        assert linear["time_ms"] > 0 and linear["ort_time_ms"] is None  # eager still timed
        assert "onnxruntime failed: export failed: torch.export failed" in linear["note"]
    assert "ort ms" in err and "ort/eager" in err


def test_default_run_is_eager_only():
    config = BenchConfig(attn=["linear"], sizes=[(4, 4)], dim=16, batch=2, **QUICK)
    runner = make_runner(config)
    assert runner.ort is None
    result = run_benchmark(config, runner=runner)
    assert all(r.runtime == "eager" and r.ort_time_ms is None for r in result.rows)
    assert "ort ms" not in markdown(result) and "ort/eager" not in markdown(result, wide=True)


class TinyNet(nn.Module):
    """A small image classifier: (B, 3, H, W) -> (B, 4)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        return self.head(torch.relu(self.conv(x)).mean((2, 3)))


def test_models_get_ort_times_and_small_sizes_are_skipped(exports):
    config = ModelBenchConfig(
        models=["tiny"], factories={"tiny": TinyNet}, batches=[1, 2], sizes=[(40, 36), (20, 20)],
        runtime="onnxruntime", **QUICK,
    )  # fmt: skip
    result = run_benchmark(config, runner=make_model_runner(config))
    assert exports == ["TinyNet"]
    assert len(result.rows) == 4 and result.config["runtime"] == "onnxruntime"
    for row in result.rows:
        if row.h == 40:
            assert row.ort_runs >= 2 and row.ort_max_abs_diff <= 1e-4
            assert row.ort_vs_eager == pytest.approx(row.ort_time_ms / row.time_ms)
        else:
            assert row.ort_time_ms is None and row.time_ms > 0
            assert "onnxruntime skipped: the export covers H, W >= 33" in row.note
    assert "| ort ms | ort/eager |" in markdown(result)


@pytest.mark.parametrize(
    ("setting", "option"),
    [({"backward": True}, "--backward"), ({"dtype": "bf16"}, "--dtype bf16"),
     ({"layout": "tokens"}, "--layout tokens"), ({"runtime": "tvm"}, "--runtime 'tvm'")],
)  # fmt: skip
def test_settings_onnxruntime_does_not_take(setting, option):
    config = BenchConfig(attn=["linear"], sizes=[(4, 4)], dim=16, **{"runtime": "onnxruntime",
                         **setting})  # fmt: skip
    with pytest.raises(BenchError, match=option.replace("'", ".")):
        make_runner(config)


def test_cli_rejects_onnxruntime_with_backward(capsys):
    assert main(["bench", "--runtime", "onnxruntime", "--backward"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not with --backward" in err


def test_ort_columns_come_last_in_both_kinds_of_row() -> None:
    from dataclasses import fields

    from lightattn.bench.results import ModelRow, OrtColumns, Row

    ort = [f.name for f in fields(OrtColumns)]
    assert ort[0] == "runtime" and len(ort) == 8
    for row in (Row, ModelRow):
        names = [f.name for f in fields(row)]
        assert names[-len(ort) :] == ort and len(set(names)) == len(names), row
    assert [f.name for f in fields(Row)][:2] == ["mechanism", "settings"]
    assert [f.name for f in fields(ModelRow)][:2] == ["model", "family"]
