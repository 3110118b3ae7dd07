"""Model registry: families (builders taking timm-style keywords) and named configurations."""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .backbone import Backbone

Family = Callable[..., Backbone]
F = TypeVar("F", bound=Family)


@dataclass(frozen=True)
class Published:
    """A model's published size and accuracy (ImageNet-1k, 224², single crop), with the source.

    `params_m` millions of parameters and `gmacs` 10⁹ multiply-accumulates at 224²;
    `exact` says whether the parameter count is exact (timm's tables, or a count of the
    released code: compared within 1%) or a paper's rounded figure (within 3%); MACs are
    compared within 3%. `gmacs_without_attention`: the figure leaves out the attention
    products q·kᵀ and attn·v (timm's PVTv2 counts: its profiler does not see the fused
    `scaled_dot_product_attention`). `top1` is the published ImageNet top-1 accuracy,
    quoted, never re-measured here.
    """

    params_m: float
    gmacs: float | None
    top1: float
    source: str
    exact: bool = False
    gmacs_without_attention: bool = False


@dataclass(frozen=True)
class ModelEntry:
    name: str
    family: str
    defaults: Mapping[str, Any] = field(default_factory=dict)
    paper: str = ""
    published: Published | None = None


# spellings of one setting: a caller's spelling replaces a named model's default
ALIASES = ({"embed_dim", "embed_dims"}, {"mlp_ratio", "mlp_ratios"})

_FAMILIES: dict[str, Family] = {}
_MODELS: dict[str, ModelEntry] = {}


def register_family(name: str) -> Callable[[F], F]:
    """Decorator: a builder `fn(**timm_style_kwargs) -> Backbone`, creatable by name."""

    def decorate(fn: F) -> F:
        _FAMILIES[name] = fn
        return fn

    return decorate


def register_model(
    name: str,
    family: str,
    defaults: Mapping[str, Any],
    paper: str,
    published: Published | None = None,
) -> None:
    """A named configuration: `family` built with `defaults` (overridable at creation)."""
    if family not in _FAMILIES:
        raise ValueError(f"family={family!r} is not registered")
    _MODELS[name] = ModelEntry(name, family, dict(defaults), paper, published)


def list_models() -> list[str]:
    """Names of the registered named models (published architectures), sorted."""
    return sorted(_MODELS)


def list_families() -> list[str]:
    """Names of the model families, each creatable with its own keyword arguments."""
    return sorted(_FAMILIES)


def model_entry(name: str) -> ModelEntry:
    if name not in _MODELS:
        raise ValueError(unknown_name_message(name))
    return _MODELS[name]


def unknown_name_message(name: object) -> str:
    known = list_models() + list_families()
    close = difflib.get_close_matches(str(name), known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return (
        f"unknown model name={name!r}{hint} Known models: {', '.join(list_models())}; "
        f"families: {', '.join(list_families())}"
    )


def family_arguments(fn: Family) -> list[str]:
    return [p.name for p in inspect.signature(fn).parameters.values()]


def without_aliases(defaults: Mapping[str, Any], given: Mapping[str, Any]) -> dict[str, Any]:
    """`defaults` less every setting the caller gives under any of its spellings."""
    out = dict(defaults)
    for group in ALIASES:
        if group & set(given):
            for key in group:
                out.pop(key, None)
    return out


def create_model(name: str, **kwargs: Any) -> Backbone:
    """Build a named model (`list_models()`) or a family (`list_families()`).

    Keyword arguments override a named model's configuration and use timm's names
    (`embed_dim`, `depths`, `num_heads`, `window_size`, `num_classes`, `in_chans`,
    `drop_path_rate`, ...); `attn="name"` with `attn_kwargs={...}` (one mapping, or one per
    stage) makes every attention block that registered mechanism; `features_only=True`
    returns the stages' maps instead of logits. Unknown names and keywords, and conflicting
    keywords, raise ValueError naming them.
    """
    if name in _MODELS:
        entry = _MODELS[name]
        fn = _FAMILIES[entry.family]
        kwargs = {**without_aliases(entry.defaults, kwargs), **kwargs}
    elif name in _FAMILIES:
        fn = _FAMILIES[name]
    else:
        raise ValueError(unknown_name_message(name))
    accepted = family_arguments(fn)
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ValueError(
            f"unknown argument(s) {unknown} for model {name!r}; accepted: {', '.join(accepted)}"
        )
    return fn(**kwargs)
