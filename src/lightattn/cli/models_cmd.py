"""`lightattn models`: every named backbone with params, GMACs, the published figures and
this machine's img/s."""

from __future__ import annotations

import argparse
import json
import sys

import torch
from rich.console import Console
from rich.table import Table

from .. import models
from .args import UsageError


def run(args: argparse.Namespace) -> int:
    """Print the model table (or JSON with --json); unknown names exit 2."""
    known = models.list_models()
    unknown = [n for n in args.names if n not in known]
    if unknown:
        raise UsageError(f"lightattn models: error: unknown model(s) {unknown}; known: {known}")
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = models.model_rows(
        args.names or None, size=args.size, batch_sizes=args.batch, timed=not args.no_time,
        min_runs=args.min_runs, min_time=args.min_time,
    )  # fmt: skip
    if args.json:
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return 0
    width = None if sys.stdout.isatty() else 120  # files and pipes get every column whole
    Console(file=sys.stdout, width=width).print(table(rows, args))
    return 0


def table(rows: list[dict], args: argparse.Namespace) -> Table:
    title = f"named models at {args.size}², {torch.get_num_threads()} torch threads"
    out = Table(title=title)
    for col in ("model", "params", "published", f"GMACs {args.size}²", "published", "top-1"):
        out.add_column(col, justify="left" if col == "model" else "right", no_wrap=True)
    timed = not args.no_time
    if timed:
        for batch in args.batch:
            out.add_column(f"img/s b{batch}", justify="right", no_wrap=True)
    for r in rows:
        cells = [
            r["name"], f"{r['params'] / 1e6:.2f}M", _num(r.get("published_params_m"), "M"),
            f"{r['gmacs']:.2f}", _num(r.get("published_gmacs")), _num(r.get("top1")),
        ]  # fmt: skip
        if timed:
            cells += [f"{r[f'img_s_b{b}']:.1f}" for b in args.batch]
        out.add_row(*cells)
    return out


def _num(value: float | None, unit: str = "") -> str:
    return "" if value is None else f"{value:g}{unit}"
