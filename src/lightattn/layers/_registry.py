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
        old = _REGISTRY.get(name)
        if old is not None and not _same_definition(old, cls):
            raise ValueError(
                f"attention name={name!r} is already registered by "
                f"{old.__module__}.{old.__qualname__}"
            )
        _REGISTRY[name] = cls
        cls.name = name
        return cls

    return decorate


def _same_definition(a: type, b: type) -> bool:
    """A module re-imported (e.g. reloaded in a notebook) defines the same class again."""
    return (a.__module__, a.__qualname__) == (b.__module__, b.__qualname__)


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


def create_attention(name: str, dim: int, num_heads: int | None = None, **kwargs) -> AttentionBase:
    """Build the mechanism `name` mapping (B, C, H, W) -> (B, C, H, W) with C = dim.

    `num_heads` defaults to dim // 32 (heads of width 32, as Swin) when 32 divides dim, else 1.

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
