"""`lightattn bench --runtime onnxruntime`: every mechanism (or model) is exported once to
ONNX with dynamic batch, H and W and timed in onnxruntime beside eager at every size, with
the same timer and skip rule; a module that cannot be exported gets its error in its rows."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .machine import BenchError
from .results import AnyRow, BenchConfig, PathResult

RUNTIMES = ("eager", "onnxruntime")
EXPORT_BATCH = 2
ORT_TOLERANCE = 1e-4  # max |ORT - eager| of a case's outputs above which its row says so


def check_runtime(config: BenchConfig) -> None:
    """BenchError for an unknown runtime, or settings onnxruntime does not take (it runs
    fp32 inference on the CPU on (B, C, H, W) inputs)."""
    if config.runtime not in RUNTIMES:
        raise BenchError(f"--runtime {config.runtime!r} is not one of {', '.join(RUNTIMES)}")
    if config.runtime == "eager":
        return
    bad = {
        "--backward": config.backward,
        f"--device {config.device}": config.device != "cpu",
        f"--dtype {config.dtype}": config.dtype != "fp32",
        "--layout tokens": config.layout == "tokens",
    }
    given = [option for option, is_set in bad.items() if is_set]
    if given:
        raise BenchError(
            f"--runtime onnxruntime times fp32 inference on the CPU on (B, C, H, W) inputs: "
            f"not with {', '.join(given)}"
        )


class OrtSessions:
    """One onnxruntime session per row label, exported on first use into a temporary
    directory (removed with this object); a failed export is remembered as its error."""

    def __init__(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="lightattn-ort-")
        self._sessions: dict[str, Any] = {}
        self._errors: dict[str, str] = {}
        self.min_sides: dict[str, int] = {}
        # (label, batch, size) -> max |ORT - eager| on the case's input, until its row has it
        self.diffs: dict[tuple[str, int, tuple[int, int]], float] = {}

    def session(self, label: str, module: nn.Module, example: Callable[[int], torch.Tensor]) -> Any:
        """The session of `label`: `module` exported with the input `example(min_side)`
        the first time. Raises BenchError with the export's error (every time)."""
        from ..export.onnx import default_min_side, export_onnx, ort_session

        if label in self._errors:
            raise BenchError(self._errors[label])
        if label not in self._sessions:
            min_side = default_min_side(module)
            self.min_sides[label] = min_side
            path = Path(self._dir.name) / f"{len(self._sessions) + len(self._errors)}.onnx"
            try:
                export_onnx(module, example(min_side), path, min_side=min_side)
                self._sessions[label] = ort_session(path)
            except Exception as err:  # noqa: BLE001 - any export failure is a row's result
                self._errors[label] = "export failed: " + one_line(err)
                raise BenchError(self._errors[label]) from None
        return self._sessions[label]


def one_line(err: BaseException, limit: int = 200) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


def fill_ort(row: AnyRow, result: PathResult) -> str:
    """ORT's median, min, max and IQR (ms) and ORT/eager into the row; the note to add
    when ORT did not run."""
    row.runtime = "onnxruntime"
    if result.timing is None:
        return f"onnxruntime {'skipped' if result.skipped else 'failed'}: " + (
            result.skipped or result.error or ""
        )
    t = result.timing
    row.ort_time_ms, row.ort_min_ms, row.ort_max_ms = t.median * 1e3, t.best * 1e3, t.worst * 1e3
    row.ort_iqr_ms, row.ort_runs = t.iqr * 1e3, t.runs
    if row.time_ms:
        row.ort_vs_eager = row.ort_time_ms / row.time_ms
    return ""
