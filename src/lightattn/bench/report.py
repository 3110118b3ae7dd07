"""Presentation of a finished run: rich table, CSV, JSON and a markdown summary."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from .results import BASELINE, BenchResult, Row

# (header, function of a row -> text, right-aligned)
COLUMNS: list[tuple[str, Any, bool]] = [
    ("mechanism", lambda r: r.mechanism, False),
    ("size", lambda r: r.size, False),
    ("params", lambda r: fmt_count(r.params), True),
    ("GMACs", lambda r: fmt_num(r.macs / 1e9 if r.macs else None), True),
    ("ms", lambda r: fmt_num(r.time_ms), True),
    ("±IQR", lambda r: fmt_num(r.iqr_ms), True),
    ("img/s", lambda r: fmt_num(r.images_per_s), True),
    ("GFLOP/s", lambda r: fmt_num(r.gflops), True),
    ("%GEMM", lambda r: fmt_pct(r.gemm_fraction), True),
    ("peak MB", lambda r: fmt_num(r.peak_mem_bytes / 1e6 if r.peak_mem_bytes else None), True),
    ("ref ms", lambda r: fmt_num(r.ref_time_ms), True),
    ("ref/fast", lambda r: fmt_ratio(r.ref_speedup), True),
    (f"vs {BASELINE}", lambda r: fmt_ratio(r.vs_baseline), True),
]
COMPARE_COLUMN = ("new/old", lambda r: fmt_ratio(r.compare_ratio), True)
NOTE_COLUMN = ("note", lambda r: r.note, False)


def fmt_num(value: float | None) -> str:
    """Three significant digits, no exponent below 1e6; empty for None."""
    if value is None:
        return ""
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def fmt_count(value: int) -> str:
    if value >= 1e6:
        return f"{value / 1e6:.2f}M"
    if value >= 1e3:
        return f"{value / 1e3:.1f}k"
    return str(value)


def fmt_pct(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.0f}%"


def fmt_ratio(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}×"


def columns(rows: list[Row]) -> list[tuple[str, Any, bool]]:
    """The table's columns: new/old only when a comparison was made."""
    cols = list(COLUMNS)
    if any(r.compare_ratio is not None for r in rows):
        cols.append(COMPARE_COLUMN)
    return [*cols, NOTE_COLUMN]


def header_lines(result: BenchResult) -> list[str]:
    """Two lines describing the machine, the settings and the GEMM rate."""
    m, c, g = result.machine, result.config, result.gemm
    rates = [
        f"{d} {g[d + '_gflops']:.1f} GFLOP/s ({g[d + '_size']}³)"
        for d in dict.fromkeys(["fp32", c["dtype"]])
    ]
    rate = "GEMM " + ", ".join(rates) + " (median, best of start/end)"
    where = m.get("gpu") or m["cpu"]
    return [
        f"{where}, {m['usable_cores']} cores, {m['threads']} torch threads, "
        f"torch {m['torch']}, {m['device']}, {m['dtype']}; {rate}",
        f"C={c['dim']}, {c['heads']} heads, batch {c['batch']}, {c['mode']}"
        f"{', torch.compile' if c['compile'] else ''}; {m['date']}; "
        f"wall {result.wall_seconds:.1f} s",
    ]


def rich_table(result: BenchResult) -> Table:
    """The terminal table, one section per size."""
    table = Table(title="lightattn bench", caption="\n".join(header_lines(result)))
    cols = columns(result.rows)
    for name, _, right in cols:
        table.add_column(name, justify="right" if right else "left", overflow="fold")
    size = None
    for r in result.rows:
        if size is not None and r.size != size:
            table.add_section()
        size = r.size
        style = "dim" if r.status != "ok" else None
        table.add_row(*(fn(r) for _, fn, _ in cols), style=style)
    return table


def print_table(result: BenchResult, console: Console) -> None:
    console.print(rich_table(result))


def markdown(result: BenchResult) -> str:
    """A GitHub-markdown summary: machine line, settings line and the table."""
    cols = columns(result.rows)
    lines = [f"- {line}" for line in header_lines(result)]
    lines += ["", "| " + " | ".join(c[0] for c in cols) + " |"]
    lines.append("|" + "|".join("---:" if c[2] else "---" for c in cols) + "|")
    for r in result.rows:
        cells = [str(fn(r)).replace("|", "\\|") for _, fn, _ in cols]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def csv_row(row: Row) -> dict[str, Any]:
    out = row.as_dict()
    out["settings"] = ";".join(f"{k}={v}" for k, v in row.settings.items())
    return out


def write_csv(result: BenchResult, path: Path) -> None:
    rows = [csv_row(r) for r in result.rows]
    fields = list(rows[0]) if rows else ["mechanism"]
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def to_json(result: BenchResult) -> str:
    """The result as JSON; non-finite numbers are an error (JSON has none)."""
    return json.dumps(result.as_dict(), indent=2, default=str, allow_nan=False)


def write_outputs(result: BenchResult, out: Path) -> list[Path]:
    """results.csv, results.json, results.md and the plots in `out`; the paths written."""
    from .plots import write_plots

    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "results.csv", out / "results.json", out / "results.md"]
    write_csv(result, paths[0])
    paths[1].write_text(to_json(result) + "\n", encoding="utf-8")
    paths[2].write_text(markdown(result), encoding="utf-8")
    return paths + write_plots(result, out)
