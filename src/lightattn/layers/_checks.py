"""Argument validation shared by every mechanism: clear ValueErrors, never reshape failures."""

from __future__ import annotations

import operator
from collections.abc import Iterable

HEAD_WIDTH = 32


def check_positive_int(name: str, value: object) -> int:
    """A positive integer (numpy and other integer types accepted) as a Python int."""
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise ValueError(f"{name}={value!r} must be a positive integer")
    if operator.index(value) <= 0:
        raise ValueError(f"{name}={value!r} must be a positive integer")
    return operator.index(value)


def check_probability(name: str, value: float) -> float:
    if not 0.0 <= float(value) < 1.0:
        raise ValueError(f"{name}={value!r} must be in [0, 1)")
    return float(value)


def check_choice(name: str, value: object, choices: Iterable[object]) -> object:
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not one of {choices}")
    return value


def default_heads(dim: int) -> int:
    """Heads of width HEAD_WIDTH (32, as Swin, LITv2 and DAT use) when dim allows, else 1."""
    return dim // HEAD_WIDTH if dim % HEAD_WIDTH == 0 else 1


def check_heads(dim: int, num_heads: int | None) -> int:
    """Validate dim and num_heads; returns num_heads (`default_heads(dim)` when None)."""
    dim = check_positive_int("dim", dim)
    num_heads = default_heads(dim) if num_heads is None else num_heads
    num_heads = check_positive_int("num_heads", num_heads)
    if dim % num_heads:
        raise ValueError(f"dim={dim} is not divisible by num_heads={num_heads}")
    return num_heads
