"""The registry: `@register_attention`, `list_attention`, `create_attention`."""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from ._base import AttentionBase

_REGISTRY: dict[str, type[AttentionBase]] = {}
T = TypeVar("T", bound="type[AttentionBase]")


def register_attention(name: str) -> Callable[[T], T]:
    """Class decorator: make a mechanism creatable (and tested, and benchmarked) by name."""

    def decorate(cls: T) -> T:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"attention name={name!r} is already registered")
        _REGISTRY[name] = cls
        cls.name = name
        return cls

    return decorate


def list_attention() -> list[str]:
    """Names of all registered mechanisms, sorted."""
    return sorted(_REGISTRY)


def get_attention_class(name: str) -> type[AttentionBase]:
    if name not in _REGISTRY:
        known = list_attention()
        close = difflib.get_close_matches(str(name), known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown attention name={name!r}{hint} Known: {', '.join(known)}")
    return _REGISTRY[name]


def accepted_kwargs(cls: type) -> list[str] | None:
    """The constructor's keyword names, or None when it takes **kwargs of its own."""
    params = inspect.signature(cls.__init__).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return [p.name for p in params if p.name != "self"]


def create_attention(name: str, dim: int, num_heads: int = 8, **kwargs) -> AttentionBase:
    """Build the mechanism `name` mapping (B, C, H, W) -> (B, C, H, W) with C = dim.

    Unknown keyword arguments raise a ValueError naming them and the accepted ones.
    """
    cls = get_attention_class(name)
    accepted = accepted_kwargs(cls)
    if accepted is not None:
        unknown = sorted(set(kwargs) - set(accepted))
        if unknown:
            raise ValueError(
                f"unknown argument(s) {unknown} for attention {name!r}; "
                f"accepted: {', '.join(a for a in accepted if a not in ('dim', 'num_heads'))}"
            )
    return cls(dim=dim, num_heads=num_heads, **kwargs)
