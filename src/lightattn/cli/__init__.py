"""Command line: `lightattn bench` and `lightattn list`."""

from .main import main

__all__ = ["main"]
