"""The last step every family shares: attention swap, head/feature settings, the Backbone."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .backbone import Backbone, StageSpec, swap_attention


def build(
    stages: Sequence[StageSpec],
    *,
    attn: str | None,
    attn_kwargs: object,
    num_classes: int | None,
    features_only: bool,
    **backbone_kwargs: Any,
) -> Backbone:
    """`attn` (a registered mechanism) replaces every attention block's mechanism, with
    `attn_kwargs`; `attn_kwargs` alone, or `num_classes` with `features_only`, conflict."""
    if attn_kwargs is not None and attn is None:
        raise ValueError(f"attn_kwargs={attn_kwargs!r} needs attn=NAME (the mechanism to build)")
    if features_only and num_classes is not None:
        raise ValueError(
            f"conflicting arguments features_only=True and num_classes={num_classes!r}: "
            "a features_only model has no classifier head"
        )
    if attn is not None:
        if not any(spec.has_attention for spec in stages):
            raise ValueError(f"attn={attn!r}: this configuration has no attention block")
        stages = swap_attention(stages, attn, attn_kwargs)
    return Backbone(
        stages,
        num_classes=1000 if num_classes is None else num_classes,
        features_only=features_only,
        **backbone_kwargs,
    )


def build_family(stages: Sequence[StageSpec], args: Mapping[str, Any], **extra: Any) -> Backbone:
    """`build` with the settings every family takes under timm's names, read from `args`
    (the family's keyword arguments, e.g. its `locals()`); `extra` goes to the Backbone."""
    return build(
        stages,
        attn=args["attn"],
        attn_kwargs=args["attn_kwargs"],
        num_classes=args["num_classes"],
        features_only=args["features_only"],
        in_chans=args["in_chans"],
        drop_path_rate=args["drop_path_rate"],
        drop_rate=args["drop_rate"],
        attn_drop=args["attn_drop_rate"],
        proj_drop=args["proj_drop_rate"],
        qkv_bias=args["qkv_bias"],
        **extra,
    )
