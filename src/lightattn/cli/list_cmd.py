"""`lightattn list`: the registered mechanisms with their default settings."""

from __future__ import annotations

import argparse
import json
import re
import sys

from rich.console import Console
from rich.table import Table

import lightattn
from lightattn.layers import get_attention_class
from lightattn.layers._checks import default_heads

# a sentence ends at ". ", "! " or "? " before a capital letter (not "et al. 2017" nor
# "i.e. a"), or at the end of the paragraph
SENTENCE_END = re.compile(r"[.!?](?=\s+[A-Z(\"'])|[.!?]$")
ABBREVIATIONS = ("et al.", "e.g.", "i.e.", "cf.", "vs.", "Fig.", "Eq.")


def first_paragraph(doc: str | None) -> str:
    """The docstring's lines up to the first blank line, joined with single spaces."""
    lines = []
    for line in (doc or "").strip().splitlines():
        if not line.strip():
            break
        lines.append(line.strip())
    return " ".join(lines)


def summary(doc: str | None) -> str:
    """The first full sentence of the docstring's first paragraph (all of the paragraph
    when it has no sentence end outside parentheses)."""
    text = first_paragraph(doc)
    for match in SENTENCE_END.finditer(text):
        head = text[: match.end()]
        if head.count("(") == head.count(")") and not head.endswith(ABBREVIATIONS):
            return head
    return text


def describe(name: str, dim: int, heads: int | None) -> dict[str, object]:
    """Name, class, summary, the heads it is built with and its default settings (built at
    dim and heads; heads None is the library default)."""
    cls = get_attention_class(name)
    entry: dict[str, object] = {
        "name": name,
        "class": cls.__name__,
        "summary": summary(cls.__doc__),
    }
    try:
        module = lightattn.create_attention(name, dim, heads)
        entry["num_heads"] = module.num_heads
        entry["settings"] = module.settings()
        entry["params"] = sum(p.numel() for p in module.parameters())
    except ValueError as err:
        entry["error"] = str(err)
    return entry


def title(dim: int, heads: int | None) -> str:
    """The table's title, with the heads the mechanisms are built with."""
    if heads is None:
        return (
            f"registered mechanisms (defaults at dim={dim}, heads={default_heads(dim)}: dim // 32)"
        )
    return f"registered mechanisms (defaults at dim={dim}, heads={heads})"


def run(args: argparse.Namespace) -> int:
    """Print the registry as a table, or as JSON with --json."""
    entries = [describe(n, args.dim, args.heads) for n in lightattn.list_attention()]
    if args.json:
        sys.stdout.write(json.dumps(entries, indent=2, default=str) + "\n")
        return 0
    table = Table(title=title(args.dim, args.heads))
    for col in ("name", "heads", "default settings", "params", "summary"):
        table.add_column(
            col, justify="right" if col in ("heads", "params") else "left", overflow="fold"
        )
    for e in entries:
        settings = e.get("error") or ", ".join(f"{k}={v}" for k, v in e["settings"].items())
        table.add_row(
            e["name"], str(e.get("num_heads", "")), settings, str(e.get("params", "")),
            e["summary"],
        )  # fmt: skip
    Console(file=sys.stdout).print(table)
    return 0
