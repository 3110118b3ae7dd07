"""Log-log plots of latency and peak memory against the token count, one line per mechanism,
with the fitted scaling exponent in the legend (Agg canvas: no display, no pyplot state)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .results import BenchResult, Row

MARKERS = "os^Dv<>phX*P"


def fit_exponent(tokens: list[float], values: list[float]) -> float | None:
    """Least-squares slope of log(value) against log(tokens); None with < 2 distinct N."""
    pairs = [(n, v) for n, v in zip(tokens, values, strict=True) if n > 0 and v and v > 0]
    if len({n for n, _ in pairs}) < 2:
        return None
    x = np.log([n for n, _ in pairs])
    y = np.log([v for _, v in pairs])
    return float(np.polyfit(x, y, 1)[0])


def series(rows: list[Row], value: Callable[[Row], float | None]) -> dict[str, tuple[list, list]]:
    """mechanism -> (tokens, values) of its measured rows, in token order."""
    out: dict[str, tuple[list, list]] = {}
    for r in sorted(rows, key=lambda r: r.tokens):
        v = value(r)
        if v:
            xs, ys = out.setdefault(r.mechanism, ([], []))
            xs.append(r.tokens)
            ys.append(v)
    return out


def plot(
    result: BenchResult, value: Callable[[Row], float | None], ylabel: str, title: str, path: Path
) -> Path:
    """One log-log figure written as PNG."""
    fig = Figure(figsize=(7.5, 5), dpi=90)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    colors = matplotlib.colormaps["tab20"]
    for i, (name, (xs, ys)) in enumerate(series(result.rows, value).items()):
        k = fit_exponent(xs, ys)
        label = f"{name} (∝ $N^{{{k:.2f}}}$)" if k is not None else f"{name} (one size)"
        ax.loglog(xs, ys, marker=MARKERS[i % len(MARKERS)], label=label, color=colors(i % 20))
    c = result.config
    ax.set_xlabel("tokens N = H·W")
    ax.set_ylabel(ylabel)
    ax.set_title(f"{title}: C={c['dim']}, {c['heads']} heads, batch {c['batch']}, "
                 f"{c['dtype']}, {c['mode']}", fontsize=10)  # fmt: skip
    ax.grid(True, which="both", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path


def write_plots(result: BenchResult, out: Path) -> list[Path]:
    """latency.png and memory.png in `out`."""
    return [
        plot(result, lambda r: r.time_ms, "median latency per batch (ms)", "Latency",
             out / "latency.png"),
        plot(result, lambda r: r.peak_mem_bytes / 1e6 if r.peak_mem_bytes else None,
             "peak memory per batch (MB)", "Peak memory", out / "memory.png"),
    ]  # fmt: skip
