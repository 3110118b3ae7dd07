"""What every shrink step records: parameters, MACs, weight size, accuracy, and latency in
eager PyTorch and in ONNX Runtime, timed round-robin so that every model sees the same load."""

from __future__ import annotations

import io
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from ..models import time_model


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def weight_megabytes(model: nn.Module) -> float:
    """Size of the serialized state dict (int8 packed weights included) in MB."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.tell() / 1e6


@torch.no_grad()
def count_macs(model: nn.Module, size: int, in_chans: int) -> int:
    """Multiply-accumulates of one (1, in_chans, size, size) forward pass as executed
    (torch.utils.flop_counter: matmuls, linears, convolutions, attention kernels; / 2)."""
    was_training = model.training
    model.eval()
    with FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, in_chans, size, size))
    model.train(was_training)
    return counter.get_total_flops() // 2


@torch.no_grad()
def accuracy(model: nn.Module, images: Tensor, labels: Tensor, batch: int = 256) -> float:
    """Top-1 accuracy of `model` (eval mode) on (N, C, S, S) images."""
    was_training = model.training
    model.eval()
    correct = 0
    for i in range(0, len(labels), batch):
        correct += int((model(images[i : i + batch]).argmax(1) == labels[i : i + batch]).sum())
    model.train(was_training)
    return correct / max(len(labels), 1)


def onnx_tools() -> tuple[Callable, Callable] | None:
    """(export_onnx, ort_session) from lightattn.export.onnx, or None if not available."""
    try:
        from ..export.onnx import export_onnx, ort_session
    except ImportError:
        return None
    return export_onnx, ort_session


def export_static(model: nn.Module, batch: int, size: int, in_chans: int, path: Path) -> str | None:
    """Export `model` for a fixed (batch, in_chans, size, size) input to `path`; None on
    success, else why not (one line)."""
    tools = onnx_tools()
    if tools is None:
        return "lightattn.export.onnx not available"
    try:
        example = torch.zeros(batch, in_chans, size, size)
        tools[0](model.eval(), example, path, dynamic=False)
    except Exception as err:  # export failures come as many types (torch, onnx, ValueError)
        return f"export failed: {type(err).__name__}: {str(err).splitlines()[0][:160]}"
    return None


def export_dynamic(model: nn.Module, size: int, in_chans: int, path: Path) -> str | None:
    """Export with dynamic batch, H and W (example side at least the exporter's smallest
    network side); None on success, else why not."""
    tools = onnx_tools()
    if tools is None:
        return "lightattn.export.onnx not available"
    from ..export.onnx import NETWORK_MIN_SIDE

    side = max(size, NETWORK_MIN_SIDE)
    try:
        tools[0](model.eval(), torch.zeros(1, in_chans, side, side), path, dynamic=True)
    except Exception as err:  # noqa: BLE001
        return f"{type(err).__name__}: {str(err).splitlines()[0][:160]}"
    return None


@dataclass
class Timed:
    """A model to time: eager module and ONNX files (one per batch size), at an input side
    and channel count."""

    label: str
    module: nn.Module | None
    size: int
    in_chans: int
    onnx: dict[int, Path] = field(default_factory=dict)
    results: dict[str, list[float]] = field(default_factory=dict)

    def add(self, key: str, ms: float) -> None:
        self.results.setdefault(key, []).append(ms)

    def best(self) -> dict[str, float]:
        """Per measure, the lowest of the rounds' medians (the least disturbed round)."""
        return {k: min(v) for k, v in self.results.items()}


def ort_median_ms(session: Any, x: Tensor, min_runs: int, min_time: float) -> float:
    name = session.get_inputs()[0].name
    feed = {name: x.numpy()}
    session.run(None, feed)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_runs or time.perf_counter() - start < min_time:
        t0 = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def time_round_robin(
    items: Sequence[Timed],
    batches: Sequence[int],
    threads: int,
    rounds: int = 3,
    min_runs: int = 3,
    min_time: float = 0.3,
) -> None:
    """Time every item at every batch size, eager and ORT, one round over all items after
    another (`rounds` times, after one unrecorded warm-up round), so a busy machine slows
    them alike; medians per round are stored in `item.results` under 'eager_b{B}' /
    'ort_b{B}' as ms per call."""
    tools = onnx_tools()
    sessions = {}
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        if tools is not None:
            for item in items:
                for b, path in item.onnx.items():
                    sessions[(item.label, b)] = tools[1](path, threads=threads)
        for round_ in range(rounds + 1):  # round 0 warms every model up, unrecorded
            for item in items:
                for b in batches:
                    x = torch.randn(b, item.in_chans, item.size, item.size)
                    if item.module is not None:
                        t = time_model(
                            item.module, b, item.size, min_runs=min_runs, min_time=min_time,
                            in_chans=item.in_chans,
                        )  # fmt: skip
                        if round_:
                            item.add(f"eager_b{b}", t.ms)
                    if (item.label, b) in sessions:
                        ms = ort_median_ms(sessions[(item.label, b)], x, min_runs, min_time)
                        if round_:
                            item.add(f"ort_b{b}", ms)
    finally:
        torch.set_num_threads(previous)
