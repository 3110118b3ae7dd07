"""Whole-model size, MACs and throughput: the rows `lightattn models` prints."""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ._args import positive_int
from ._registry import create_model, list_models, model_entry


@dataclass(frozen=True)
class Timing:
    """Forward time of one call on a (batch_size, C, H, W) input: median and fastest run in
    ms, the number of timed runs, and images per second from the median. `peak_mb`: peak
    CUDA memory allocated by one call (None on CPU)."""

    batch_size: int
    size: tuple[int, int]
    ms: float
    min_ms: float
    runs: int
    peak_mb: float | None = None

    @property
    def img_per_s(self) -> float:
        return 1000.0 * self.batch_size / self.ms


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def time_model(
    model: nn.Module,
    batch_size: int = 1,
    size: int | tuple[int, int] = 224,
    min_runs: int = 5,
    min_time: float = 1.0,
    warmup: int = 1,
    in_chans: int | None = None,
) -> Timing:
    """Time `model` in eval mode under inference mode on random images on the model's device
    and dtype: `warmup` untimed calls, then calls until at least `min_runs` runs and
    `min_time` seconds. The model's train/eval mode is restored afterwards."""
    batch_size = positive_int("batch_size", batch_size)
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    param = next(model.parameters())
    chans = getattr(model, "in_chans", 3) if in_chans is None else in_chans
    x = torch.randn(batch_size, chans, h, w, device=param.device, dtype=param.dtype)
    was_training = model.training
    model.eval()
    try:
        for _ in range(warmup):
            model(x)
        peak = None
        if param.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(param.device)
            before = torch.cuda.memory_allocated(param.device)
        times: list[float] = []
        start = time.perf_counter()
        while len(times) < min_runs or time.perf_counter() - start < min_time:
            _sync(param.device)
            t0 = time.perf_counter()
            model(x)
            _sync(param.device)
            times.append(time.perf_counter() - t0)
        if param.device.type == "cuda":
            peak = (torch.cuda.max_memory_allocated(param.device) - before) / 1e6
    finally:
        model.train(was_training)
    return Timing(
        batch_size, (h, w), 1000 * statistics.median(times), 1000 * min(times), len(times), peak
    )


def model_rows(
    names: Sequence[str] | None = None,
    size: int = 224,
    batch_sizes: Sequence[int] = (1, 32),
    timed: bool = True,
    min_runs: int = 3,
    min_time: float = 1.0,
    device: str | torch.device = "cpu",
) -> list[dict[str, Any]]:
    """One row per named model (default: all of `list_models()`): name, family, params,
    GMACs at size² (`model.macs`), the published params / GMACs / top-1 and their source,
    and with `timed` this machine's img/s at each batch size (`img_s_b1`, `img_s_b32`, ...)
    and the median ms per call (`ms_b1`, ...)."""
    rows = []
    for name in list_models() if names is None else names:
        entry = model_entry(name)
        torch.manual_seed(0)
        model = create_model(name).to(device).eval()
        row: dict[str, Any] = {
            "name": name,
            "family": entry.family,
            "params": sum(p.numel() for p in model.parameters()),
            "gmacs": model.macs(size, size) / 1e9,
            "paper": entry.paper,
        }
        if entry.published is not None:
            pub = entry.published
            row.update(
                published_params_m=pub.params_m,
                published_gmacs=pub.gmacs,
                top1=pub.top1,
                source=pub.source,
            )
        if timed:
            for batch in batch_sizes:
                timing = time_model(model, batch, size, min_runs=min_runs, min_time=min_time)
                row[f"img_s_b{batch}"] = timing.img_per_s
                row[f"ms_b{batch}"] = timing.ms
        rows.append(row)
    return rows
