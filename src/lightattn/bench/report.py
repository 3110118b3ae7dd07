"""Presentation of a finished run: rich table, CSV, JSON and a markdown summary."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

from .results import BASELINE, AnyRow, BenchResult, ModelRow


@dataclass(frozen=True)
class Column:
    """A table column: header, the cell text of a row, numeric (right-aligned, never
    wrapped) or text, and whether the compact (default) table shows it."""

    header: str
    cell: Callable[[Any], str]
    numeric: bool = True
    compact: bool = True


def mb(value: int | None) -> float | None:
    return value / 1e6 if value else None


def giga(value: int | None) -> float | None:
    return value / 1e9 if value else None


COLUMNS: list[Column] = [
    Column("mechanism", lambda r: r.mechanism, numeric=False),
    Column("size", lambda r: r.size, numeric=False),
    Column("params", lambda r: fmt_count(r.params), compact=False),
    Column("GMACs", lambda r: fmt_num(giga(r.useful_macs))),
    Column("computed GMACs", lambda r: fmt_num(giga(r.macs)), compact=False),
    Column("ms", lambda r: fmt_num(r.time_ms)),
    Column("min", lambda r: fmt_num(r.min_ms)),
    Column("max", lambda r: fmt_num(r.max_ms)),
    Column("±IQR", lambda r: fmt_num(r.iqr_ms), compact=False),
    Column("runs", lambda r: str(r.runs) if r.runs else "", compact=False),
    Column("img/s", lambda r: fmt_num(r.images_per_s)),
    Column("GFLOP/s", lambda r: fmt_num(r.gflops), compact=False),
    Column("computed GFLOP/s", lambda r: fmt_num(r.computed_gflops), compact=False),
    Column("%GEMM", lambda r: fmt_pct(r.gemm_fraction)),
    Column("peak MB", lambda r: fmt_num(mb(r.peak_mem_bytes))),
    Column("ref ms", lambda r: fmt_num(r.ref_time_ms), compact=False),
    Column("ref min", lambda r: fmt_num(r.ref_min_ms), compact=False),
    Column("ref max", lambda r: fmt_num(r.ref_max_ms), compact=False),
    Column("ref peak MB", lambda r: fmt_num(mb(r.ref_peak_mem_bytes)), compact=False),
    Column("ref/fast", lambda r: fmt_ratio(r.ref_speedup)),
    Column(f"vs {BASELINE}", lambda r: fmt_ratio(r.vs_baseline)),
]
COMPARE_COLUMN = Column("new/old", lambda r: fmt_ratio(r.compare_ratio))
# `--runtime onnxruntime`: the same case in onnxruntime, both kinds of run
ORT_COLUMNS: list[Column] = [
    Column("ort ms", lambda r: fmt_num(r.ort_time_ms)),
    Column("ort min", lambda r: fmt_num(r.ort_min_ms), compact=False),
    Column("ort max", lambda r: fmt_num(r.ort_max_ms), compact=False),
    Column("ort/eager", lambda r: fmt_ratio(r.ort_vs_eager)),
    Column("ort max|diff|", lambda r: fmt_diff(r.ort_max_abs_diff), compact=False),
]
# `lightattn bench --models`: one row per (model, batch, size)
MODEL_COLUMNS: list[Column] = [
    Column("model", lambda r: r.model, numeric=False),
    Column("batch", lambda r: str(r.batch)),
    Column("size", lambda r: r.size, numeric=False),
    Column("img/s", lambda r: fmt_num(r.images_per_s)),
    Column("img/s min–max", lambda r: fmt_range(r.min_images_per_s, r.max_images_per_s)),
    Column("ms", lambda r: fmt_num(r.time_ms)),
    Column("min", lambda r: fmt_num(r.min_ms), compact=False),
    Column("max", lambda r: fmt_num(r.max_ms), compact=False),
    Column("±IQR", lambda r: fmt_num(r.iqr_ms), compact=False),
    Column("runs", lambda r: str(r.runs) if r.runs else "", compact=False),
    Column("peak MB", lambda r: fmt_num(mb(r.peak_mem_bytes))),
    Column("params", lambda r: f"{r.params / 1e6:.2f}M"),
    Column("GMACs/img", lambda r: fmt_num(giga(r.macs_per_image))),
    Column("GFLOP/s", lambda r: fmt_num(r.gflops), compact=False),
    Column("%GEMM", lambda r: fmt_pct(r.gemm_fraction)),
]


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


def fmt_range(low: float | None, high: float | None) -> str:
    """ "low–high" with fmt_num; empty when not measured."""
    if low is None or high is None:
        return ""
    return f"{fmt_num(low)}–{fmt_num(high)}"


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


def fmt_diff(value: float | None) -> str:
    return "" if value is None else f"{value:.1e}"


def columns(rows: list[AnyRow], wide: bool = False) -> list[Column]:
    """The table's columns (all with `wide`, else the compact set; a whole-model run's own);
    new/old only when a comparison was made. The note column is added by the callers."""
    base = MODEL_COLUMNS if any(isinstance(r, ModelRow) for r in rows) else COLUMNS
    cols = [c for c in base if wide or c.compact]
    if any(r.runtime == "onnxruntime" for r in rows):
        cols += [c for c in ORT_COLUMNS if wide or c.compact]
    if any(r.compare_ratio is not None for r in rows):
        cols.append(COMPARE_COLUMN)
    return cols


def footnotes(rows: list[AnyRow]) -> dict[str, int]:
    """Each distinct note -> its footnote number, in the order of the rows."""
    numbers: dict[str, int] = {}
    for r in rows:
        if r.note and r.note not in numbers:
            numbers[r.note] = len(numbers) + 1
    return numbers


def footnote_lines(notes: dict[str, int]) -> list[str]:
    return [f"[{number}] {note}" for note, number in notes.items()]


def is_models(result: BenchResult) -> bool:
    """Whether `result` is a run of whole models (`lightattn bench --models`)."""
    return "models" in result.config


def machine_line(result: BenchResult) -> str:
    """The machine, torch and the GEMM rate: the first header line of both kinds of run."""
    m, c, g = result.machine, result.config, result.gemm
    rates = [
        f"{d} {g[d + '_gflops']:.1f} GFLOP/s ({g[d + '_size']}³)"
        for d in dict.fromkeys(["fp32", c["dtype"]])
    ]
    rate = "GEMM " + ", ".join(rates) + " (median, best of start/end)"
    where = m.get("gpu") or m["cpu"]
    load_text = load_line(m) if is_models(result) else ""
    return (
        f"{where}, {m['usable_cores']} cores, {m['threads']} torch threads, "
        f"torch {m['torch']}, {m['device']}, {m['dtype']}; {rate}{load_text}"
    )


# a whole-model run's mode, by its `backward` setting
MODEL_MODES = {
    False: "eval mode, forward under inference mode",
    True: "train mode, forward+backward",
}


def load_line(machine: dict[str, Any]) -> str:
    """ "; load average A at start, B at end" (1-minute averages, those known)."""
    loads = [
        f"{machine[f'load_average_at_{when}'][0]:g} at {when}"
        for when in ("start", "end")
        if machine.get(f"load_average_at_{when}")
    ]
    return f"; load average {', '.join(loads)}" if loads else ""


ORT_LINE = (
    "ort ms: the same call in onnxruntime (CPU, as many threads, opset 18), the module "
    "exported once with dynamic batch, H and W; ort/eager: ort ms / ms (< 1: ORT faster)"
)


def runtime_lines(config: dict[str, Any]) -> list[str]:
    """The line on the onnxruntime columns, when the run has them."""
    return [ORT_LINE] if config.get("runtime") == "onnxruntime" else []


def model_header_lines(result: BenchResult) -> list[str]:
    """The header of a whole-model run: machine, settings, what the columns mean."""
    c, m = result.config, result.machine
    batches = ", ".join(str(b) for b in c["batches"])
    return [
        machine_line(result),
        f"models in {MODEL_MODES[bool(c['backward'])]}, batch {batches}, layout {c['layout']}"
        f"{', torch.compile' if c['compile'] else ''}; {m['date']}; "
        f"wall {result.wall_seconds:.1f} s",
        f"ms: one call on the whole batch, median of at least {c['min_runs']} runs and "
        f"{c['min_time']:g} s (min/max in --wide); img/s: batch / median, min–max from the "
        "slowest and fastest run; GMACs/img: model.macs(H, W)",
        *runtime_lines(c),
    ]


def header_lines(result: BenchResult) -> list[str]:
    """Lines describing the machine, the settings, the GEMM rate and the columns."""
    if is_models(result):
        return model_header_lines(result)
    m, c = result.machine, result.config
    heads = f"{c['heads']} heads" + (" (default: dim // 32)" if c.get("heads_default") else "")
    return [
        machine_line(result),
        f"C={c['dim']}, {heads}, batch {c['batch']}, {c['mode']}, "
        f"layout {c.get('layout', 'nchw')}{', torch.compile' if c['compile'] else ''}; "
        f"{m['date']}; wall {result.wall_seconds:.1f} s",
        f"ms: one call on the whole batch, median of at least {c['min_runs']} runs and "
        f"{c['min_time']:g} s; min/max: fastest/slowest run; GMACs, GFLOP/s, %GEMM: useful MACs",
        *runtime_lines(c),
    ]


def rich_table(result: BenchResult, wide: bool = False) -> Table:
    """The terminal table, one section per size; numbers never wrap, notes are footnote
    numbers."""
    title = "lightattn bench --models" if is_models(result) else "lightattn bench"
    table = Table(
        title=title, caption="\n".join(header_lines(result)), caption_justify="left",
        box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True,
    )  # fmt: skip
    cols = columns(result.rows, wide)
    for col in cols:
        table.add_column(
            col.header, justify="right" if col.numeric else "left", no_wrap=col.numeric
        )
    table.add_column("note", justify="right", no_wrap=True)
    notes = footnotes(result.rows)
    section = None
    for r in result.rows:
        if section is not None and section_of(r) != section:
            table.add_section()
        section = section_of(r)
        style = "dim" if r.status != "ok" else None
        mark = f"[{notes[r.note]}]" if r.note else ""
        table.add_row(*(col.cell(r) for col in cols), mark, style=style)
    return table


def section_of(row: AnyRow) -> tuple[int, str]:
    """The rows of one table section share this: the size (and a model row's batch)."""
    return (row.batch if isinstance(row, ModelRow) else 0, row.size)


def print_table(result: BenchResult, console: Console, wide: bool = False) -> None:
    """The table, then its footnotes."""
    console.print(rich_table(result, wide))
    for line in footnote_lines(footnotes(result.rows)):
        console.print(line, highlight=False, markup=False)


def markdown(result: BenchResult, wide: bool = False) -> str:
    """A GitHub-markdown summary: the header lines, the table and its footnotes."""
    cols = columns(result.rows, wide)
    notes = footnotes(result.rows)
    lines = [f"- {line}" for line in header_lines(result)]
    lines += ["", "| " + " | ".join([*(c.header for c in cols), "note"]) + " |"]
    lines.append("|" + "|".join("---:" if c.numeric else "---" for c in cols) + "|---|")
    for r in result.rows:
        mark = f"[{notes[r.note]}]" if r.note else ""
        cells = [str(c.cell(r)).replace("|", "\\|") for c in cols] + [mark]
        lines.append("| " + " | ".join(cells) + " |")
    if notes:
        lines += [""] + [f"{line}  " for line in footnote_lines(notes)]
    return "\n".join(lines) + "\n"


def csv_row(row: AnyRow) -> dict[str, Any]:
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


def write_outputs(result: BenchResult, out: Path, wide: bool = False) -> list[Path]:
    """results.csv, results.json, results.md (the compact or, with `wide`, the full table)
    and, for a layer run, the plots in `out`; the paths written."""
    from .plots import write_plots

    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "results.csv", out / "results.json", out / "results.md"]
    write_csv(result, paths[0])
    paths[1].write_text(to_json(result) + "\n", encoding="utf-8")
    paths[2].write_text(markdown(result, wide), encoding="utf-8")
    return paths if is_models(result) else paths + write_plots(result, out)
