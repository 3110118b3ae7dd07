"""Efficiency of `stdc_tamper` per position-attention mechanism: params, GMACs, CPU latency
and peak memory at batch 1, one row per ``inner`` (DANet's own N x N form included).

Latency is measured **interleaved**: each round calls every variant once, in order, so a
load change on a shared machine hits all variants alike. A variant's figures are the best
(minimum) and the median of its rounds; the ratio to the default uses the best, the figure
least disturbed by other processes. Peak memory is the profiler's largest running sum
of CPU allocations during one forward (:func:`lightattn.bench.memory.peak_memory`):
activations and temporaries, parameters excluded. GMACs are the network's analytic count
(:meth:`StdcTamper.macs`: convs, linears and attention matmuls).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..bench.machine import machine_info
from ..bench.memory import peak_memory
from ..layers import list_attention
from .network import create_tamper_model

DEFAULT_SIZES = (512, 1024)
DANET_LABEL = "none (DANet N×N)"


@dataclass
class Variant:
    """A table row: ``label`` and the `create_tamper_model` arguments that build it."""

    label: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    default: bool = False


def inner_variants(base: dict[str, Any], default_inner: str | None = None) -> list[Variant]:
    """One variant per registered mechanism (except 'position') inside the position module,
    plus DANet's own N x N form (inner=None), all else as ``base``; the one whose inner is
    ``default_inner`` is flagged as the default model."""
    inners: list[str | None] = [None] + [n for n in list_attention() if n != "position"]
    out = []
    for inner in inners:
        kwargs = {**base, "inner": inner}
        if inner != base.get("inner"):
            kwargs.pop("inner_kwargs", None)
        label = DANET_LABEL if inner is None else inner
        out.append(Variant(label, kwargs, default=inner == default_inner))
    return out


def default_variants() -> list[Variant]:
    """:func:`inner_variants` of the shipped checkpoint's network (STDC1 width 0.5 with
    inner=linear when no checkpoint is shipped)."""
    from .checkpoint import read_tamper_meta
    from .predict import default_checkpoint

    path = default_checkpoint()
    base = dict(read_tamper_meta(path)["model"]) if path else {"width": 0.5, "inner": "linear"}
    return inner_variants(base, base.get("inner"))


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _build(variant: Variant, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    try:
        return create_tamper_model(**variant.kwargs).eval()
    except (TypeError, ValueError) as err:
        raise ValueError(f"variant {variant.label!r}: {err}") from err


@torch.inference_mode()
def time_interleaved(
    models: Sequence[nn.Module], x: torch.Tensor, rounds: int, warmup: int = 2
) -> list[list[float]]:
    """Seconds of one forward per model per round (list per model), models called in turn
    within each round after ``warmup`` untimed calls each."""
    if rounds < 1:
        raise ValueError(f"rounds={rounds} must be >= 1")
    for m in models:
        for _ in range(warmup):
            m(x)
    times: list[list[float]] = [[] for _ in models]
    for _ in range(rounds):
        for i, m in enumerate(models):
            start = time.perf_counter()
            m(x)
            times[i].append(time.perf_counter() - start)
    return times


@torch.inference_mode()
def peak_bytes(model: nn.Module, x: torch.Tensor) -> int | None:
    """Peak CPU bytes allocated during one forward (parameters and input excluded)."""
    return peak_memory(lambda: model(x), torch.device("cpu"))


def measure(
    variants: Sequence[Variant],
    sizes: Sequence[int] = DEFAULT_SIZES,
    threads: int = 2,
    rounds: int = 10,
    seed: int = 0,
) -> dict[str, Any]:
    """Params, GMACs, latency over ``rounds`` interleaved rounds and peak memory of every
    variant on a (1, 3, S, S) input for each S in ``sizes``, with ``threads`` torch threads.
    Returns ``{"rows": [...], "machine": {...}, "config": {...}}``; each row has label,
    kwargs, default, params and per size ``gmacs``, ``ms`` (best round), ``ms_median``,
    ``ms_q1``, ``ms_q3``, ``ms_rounds``, ``peak_mb`` and ``ratio`` (ms over the default's,
    when one is flagged)."""
    if not variants:
        raise ValueError("variants must not be empty")
    if threads < 1:
        raise ValueError(f"threads={threads} must be >= 1")
    if not sizes or min(sizes) < 32:
        raise ValueError(f"sizes={list(sizes)} must be non-empty, each >= 32")
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        models = [_build(v, seed) for v in variants]
        info = machine_info(torch.device("cpu"), "float32")
        rows = [
            {"label": v.label, "kwargs": v.kwargs, "default": v.default,
             "params": count_params(m), "sizes": {}}
            for v, m in zip(variants, models, strict=True)
        ]  # fmt: skip
        started = time.perf_counter()
        for s in sizes:
            x = torch.rand(1, 3, s, s, generator=torch.Generator().manual_seed(seed))
            times = time_interleaved(models, x, rounds)
            for row, m, t in zip(rows, models, times, strict=True):
                peak = peak_bytes(m, x)
                row["sizes"][str(s)] = {
                    "gmacs": m.macs(s, s) / 1e9,
                    "ms": 1e3 * min(t),
                    "ms_median": 1e3 * float(np.median(t)),
                    "ms_q1": 1e3 * float(np.percentile(t, 25)),
                    "ms_q3": 1e3 * float(np.percentile(t, 75)),
                    "ms_rounds": [round(1e3 * v, 3) for v in t],
                    "peak_mb": None if peak is None else peak / 2**20,
                }
        add_ratios(rows, sizes)
    finally:
        torch.set_num_threads(previous)
    if hasattr(os, "getloadavg"):
        info["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
    config = {"sizes": list(sizes), "threads": threads, "rounds": rounds, "batch": 1,
              "seed": seed, "seconds": time.perf_counter() - started}  # fmt: skip
    return {"rows": rows, "machine": info, "config": config}


def add_ratios(rows: list[dict[str, Any]], sizes: Sequence[int]) -> None:
    """``ratio`` = ms / the default row's ms, per size (absent without a default row)."""
    base = next((r for r in rows if r["default"]), None)
    if base is None:
        return
    for r in rows:
        for s in sizes:
            cell = r["sizes"][str(s)]
            cell["ratio"] = cell["ms"] / base["sizes"][str(s)]["ms"]


def add_f1(result: dict[str, Any], f1: dict[str, float], label: str | None = None) -> None:
    """Attach pixel F1 figures (label -> F1) to the rows of ``result``; ``label`` names
    the column (default "pixel F1 (CASIA)")."""
    if label:
        result["f1_label"] = label
    for r in result["rows"]:
        if r["label"] in f1:
            r["f1"] = f1[r["label"]]


def _num(value: float | None, fmt: str) -> str:
    return (
        "–"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else fmt.format(value)
    )


def markdown_table(result: dict[str, Any]) -> str:
    """The table: one row per variant, per size GMACs / ms (x default) / img/s / peak MB."""
    sizes = result["config"]["sizes"]
    with_f1 = any("f1" in r for r in result["rows"])
    head = ["inner (position attention)", "params"]
    for s in sizes:
        head += [f"GMACs {s}²", f"ms {s}² best (× default)", f"ms {s}² median", f"peak MB {s}²"]
    head += [result.get("f1_label", "pixel F1 (CASIA)")] if with_f1 else []
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for r in result["rows"]:
        label = f"**{r['label']}** (default)" if r["default"] else r["label"]
        cells = [label, f"{r['params'] / 1e6:.2f}M"]
        for s in sizes:
            c = r["sizes"][str(s)]
            ratio = f" ({c['ratio']:.2f})" if "ratio" in c else ""
            cells += [f"{c['gmacs']:.2f}", f"{c['ms']:.0f}{ratio}", f"{c['ms_median']:.0f}",
                      _num(c["peak_mb"], "{:.0f}")]  # fmt: skip
        cells += [_num(r.get("f1"), "{:.3f}")] if with_f1 else []
        lines.append("| " + " | ".join(cells) + " |")
    m, c = result["machine"], result["config"]
    lines += [
        "",
        f"Batch 1, float32, {c['threads']} torch threads, {m.get('cpu', '?')} "
        f"({m.get('cores', '?')} cores), torch {m.get('torch', '?')}; {c['rounds']} rounds "
        "with every variant called once per round (interleaved); best = the fastest round. "
        "Load average "
        f"{m.get('load_average_at_start', '?')} at start, {m.get('load_average_at_end', '?')} "
        "at end. Peak MB: activations and temporaries of one forward (parameters excluded).",
    ]
    return "\n".join(lines) + "\n"


def write_efficiency(result: dict[str, Any], out_dir: str | Path, note: str = "") -> Path:
    """Write efficiency.md (the table, then ``note``) and efficiency.json; returns the .md."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md = out / "efficiency.md"
    md.write_text(markdown_table(result) + (f"\n{note.strip()}\n" if note else ""))
    (out / "efficiency.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    return md
