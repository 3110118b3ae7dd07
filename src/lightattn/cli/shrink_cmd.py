"""`lightattn shrink`: the Swin-shrinking recipe as a measured pipeline."""

from __future__ import annotations

import argparse

from .args import UsageError


def add_shrink_parser(sub: argparse._SubParsersAction) -> None:
    """Register `shrink` on the top-level sub-parsers."""
    sub.add_parser("shrink", help="shrink a trained model step by step, measured")


def run(args: argparse.Namespace) -> int:
    raise UsageError("lightattn shrink: error: not built yet")
