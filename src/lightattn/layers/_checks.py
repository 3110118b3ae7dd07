"""Argument validation shared by every mechanism: clear ValueErrors, never reshape failures."""

from __future__ import annotations

from collections.abc import Iterable


def check_positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name}={value!r} must be a positive integer")
    return value


def check_probability(name: str, value: float) -> float:
    if not 0.0 <= float(value) < 1.0:
        raise ValueError(f"{name}={value!r} must be in [0, 1)")
    return float(value)


def check_choice(name: str, value: object, choices: Iterable[object]) -> object:
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not one of {choices}")
    return value


def check_heads(dim: int, num_heads: int) -> None:
    check_positive_int("dim", dim)
    check_positive_int("num_heads", num_heads)
    if dim % num_heads:
        raise ValueError(f"dim={dim} is not divisible by num_heads={num_heads}")
