"""`lightattn export`: ONNX export of a mechanism, a named model or the tamper network."""

from __future__ import annotations

import argparse

from .args import UsageError


def add_export_parser(sub: argparse._SubParsersAction) -> None:
    """Register `export` on the top-level sub-parsers."""
    sub.add_parser("export", help="ONNX export with dynamic batch, H and W, checked in ORT")


def run(args: argparse.Namespace) -> int:
    raise UsageError("lightattn export: error: not built yet")
