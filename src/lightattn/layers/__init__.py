"""Attention mechanisms. Importing this package registers every mechanism in it: each public
module (a file not starting with "_") registers its classes with `@register_attention`."""

import importlib
import pkgutil

from ._base import AttentionBase
from ._registry import create_attention, get_attention_class, list_attention, register_attention

for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "AttentionBase",
    "create_attention",
    "get_attention_class",
    "list_attention",
    "register_attention",
]
