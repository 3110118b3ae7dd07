"""`lightattn list`: the registered mechanisms with their default settings."""

from __future__ import annotations

import argparse
import json
import sys

from rich.console import Console
from rich.table import Table

import lightattn
from lightattn.layers import get_attention_class


def describe(name: str, dim: int, heads: int) -> dict[str, object]:
    """Name, class, first docstring line and default settings (built at dim, heads)."""
    cls = get_attention_class(name)
    doc = (cls.__doc__ or "").strip().splitlines()
    entry: dict[str, object] = {
        "name": name,
        "class": cls.__name__,
        "summary": doc[0] if doc else "",
    }
    try:
        module = lightattn.create_attention(name, dim, heads)
        entry["settings"] = module.settings()
        entry["params"] = sum(p.numel() for p in module.parameters())
    except ValueError as err:
        entry["error"] = str(err)
    return entry


def run(args: argparse.Namespace) -> int:
    """Print the registry as a table, or as JSON with --json."""
    entries = [describe(n, args.dim, args.heads) for n in lightattn.list_attention()]
    if args.json:
        sys.stdout.write(json.dumps(entries, indent=2, default=str) + "\n")
        return 0
    table = Table(title=f"registered mechanisms (defaults at dim={args.dim}, heads={args.heads})")
    for col in ("name", "default settings", "params", "summary"):
        table.add_column(col, justify="right" if col == "params" else "left")
    for e in entries:
        settings = e.get("error") or ", ".join(f"{k}={v}" for k, v in e["settings"].items())
        table.add_row(e["name"], settings, str(e.get("params", "")), e["summary"])
    Console(file=sys.stdout).print(table)
    return 0
