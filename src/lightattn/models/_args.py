"""Keyword handling shared by the model families: per-stage values, aliases, clear errors."""

from __future__ import annotations

import operator
from collections.abc import Mapping, Sequence
from typing import Any


def positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not hasattr(value, "__index__") or operator.index(value) <= 0:
        raise ValueError(f"{name}={value!r} must be a positive integer")
    return operator.index(value)


def per_stage(name: str, value: object, stages: int) -> tuple[Any, ...]:
    """A scalar repeated for every stage, or a sequence with one entry per stage."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        return (value,) * stages
    if len(value) != stages:
        raise ValueError(f"{name}={tuple(value)!r} must have one entry per stage ({stages})")
    return tuple(value)


def one_of(names: tuple[str, str], values: tuple[object, object], default: object) -> object:
    """The value of whichever alias was given (timm's `embed_dim` / `embed_dims`); both given
    is a conflict."""
    if values[0] is not None and values[1] is not None:
        raise ValueError(
            f"conflicting arguments {names[0]}={values[0]!r} and {names[1]}={values[1]!r}: "
            "give one of them"
        )
    if values[0] is not None:
        return values[0]
    return default if values[1] is None else values[1]


def stage_dims(embed_dim: object, stages: int) -> tuple[int, ...]:
    """An int doubles per stage (Swin: 96 -> 96, 192, 384, 768); a sequence gives each one."""
    if isinstance(embed_dim, Sequence):
        dims = per_stage("embed_dim", embed_dim, stages)
        return tuple(positive_int(f"embed_dim[{i}]", d) for i, d in enumerate(dims))
    base = positive_int("embed_dim", embed_dim)
    return tuple(base * 2**i for i in range(stages))


def stage_depths(depths: object) -> tuple[int, ...]:
    if isinstance(depths, (str, bytes)) or not isinstance(depths, Sequence) or not depths:
        raise ValueError(f"depths={depths!r} must be a non-empty sequence of positive integers")
    return tuple(positive_int(f"depths[{i}]", d) for i, d in enumerate(depths))


def stage_attn_kwargs(attn_kwargs: object, stages: int) -> tuple[dict[str, Any], ...]:
    """`attn_kwargs`: one mapping for every stage, or one mapping per stage."""
    if attn_kwargs is None:
        return ({},) * stages
    if isinstance(attn_kwargs, Mapping):
        return (dict(attn_kwargs),) * stages
    if isinstance(attn_kwargs, Sequence) and not isinstance(attn_kwargs, (str, bytes)):
        per = per_stage("attn_kwargs", attn_kwargs, stages)
        if all(isinstance(k, Mapping) for k in per):
            return tuple(dict(k) for k in per)
    raise ValueError(
        f"attn_kwargs={attn_kwargs!r} must be a mapping, or one mapping per stage ({stages})"
    )
