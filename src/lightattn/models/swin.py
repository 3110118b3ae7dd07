"""Swin Transformer (Liu et al., "Swin Transformer: Hierarchical Vision Transformer using
Shifted Windows", ICCV 2021), laid out as timm 1.0's `SwinTransformer` so that its
checkpoints load (`load_timm_state_dict`)."""

from __future__ import annotations

from collections.abc import Callable

from ._args import one_of, per_stage, positive_int, stage_depths, stage_dims
from ._family import build_family
from ._registry import Published, register_family, register_model
from .backbone import AttnSpec, Backbone, StageSpec

Pattern = Callable[[int], tuple[AttnSpec, ...]]


def shifted_windows(window_size: int) -> tuple[AttnSpec, ...]:
    """Swin's blocks: windows, then windows shifted by window_size // 2 (no shift, and a
    window clipped to the map, along a side the window covers; see `window`)."""
    return (
        AttnSpec("window", {"window_size": window_size, "shift": False}),
        AttnSpec("window", {"window_size": window_size, "shift": True}),
    )


def swin_stages(
    pattern: Pattern,
    *,
    patch_size: int,
    embed_dim: object,
    depths: object,
    num_heads: object,
    window_size: object,
    mlp_ratio: object,
) -> list[StageSpec]:
    """Patch embedding (conv k = s = patch_size + LayerNorm), then 2x2 patch merging before
    every later stage; blocks norm -> attention -> norm -> MLP; `pattern(ws)` per stage."""
    depths = stage_depths(depths)
    n = len(depths)
    dims = stage_dims(embed_dim, n)
    heads = per_stage("num_heads", num_heads, n)
    windows = [positive_int("window_size", ws) for ws in per_stage("window_size", window_size, n)]
    ratios = per_stage("mlp_ratio", mlp_ratio, n)
    return [
        StageSpec(
            dim=dims[i],
            depth=depths[i],
            num_heads=heads[i],
            pattern=pattern(windows[i]),
            mlp_ratio=ratios[i],
            downsample="patch" if i == 0 else "merge",
            stride=positive_int("patch_size", patch_size) if i == 0 else 2,
        )
        for i in range(n)
    ]


@register_family("swin")
def swin(
    *,
    patch_size: int = 4,
    in_chans: int = 3,
    num_classes: int | None = None,
    embed_dim: int | tuple[int, ...] | None = None,
    embed_dims: tuple[int, ...] | None = None,
    depths: tuple[int, ...] = (2, 2, 6, 2),
    num_heads: int | tuple[int, ...] = (3, 6, 12, 24),
    window_size: int | tuple[int, ...] = 7,
    mlp_ratio: float | None = None,
    mlp_ratios: tuple[float, ...] | None = None,
    qkv_bias: bool = True,
    drop_rate: float = 0.0,
    proj_drop_rate: float = 0.0,
    attn_drop_rate: float = 0.0,
    drop_path_rate: float = 0.1,
    img_size: int | tuple[int, int] | None = None,
    attn: str | None = None,
    attn_kwargs: object = None,
    features_only: bool = False,
) -> Backbone:
    """Swin Transformer with timm's keyword names. (B, in_chans, H, W) -> (B, num_classes).

    `img_size` is accepted for timm compatibility and unused: any H, W >= 1 works (windows
    are padded and masked, patch merging pads odd sides). timm's `always_partition=False`
    rule holds: along a side no longer than the window, the window is clipped to the side
    and not shifted.
    """
    stages = swin_stages(
        shifted_windows,
        patch_size=patch_size,
        embed_dim=one_of(("embed_dim", "embed_dims"), (embed_dim, embed_dims), 96),
        depths=depths,
        num_heads=num_heads,
        window_size=window_size,
        mlp_ratio=one_of(("mlp_ratio", "mlp_ratios"), (mlp_ratio, mlp_ratios), 4.0),
    )
    return build_family(stages, locals())


SWIN_PAPER = "Liu et al., Swin Transformer, ICCV 2021"
register_model(
    "swin_t",
    "swin",
    {"embed_dim": 96, "depths": (2, 2, 6, 2), "num_heads": (3, 6, 12, 24), "drop_path_rate": 0.2},
    SWIN_PAPER,
    Published(
        28.29,
        4.49,
        81.3,
        "params/GMACs: timm swin_tiny_patch4_window7_224 (28.29M, 4.49G; paper 28M, 4.5G); "
        "top-1: paper Table 1",
        exact=True,
    ),
)
register_model(
    "swin_s",
    "swin",
    {"embed_dim": 96, "depths": (2, 2, 18, 2), "num_heads": (3, 6, 12, 24), "drop_path_rate": 0.3},
    SWIN_PAPER,
    Published(
        49.61,
        8.74,
        83.0,
        "params/GMACs: timm swin_small_patch4_window7_224 (49.61M, 8.74G; paper 50M, 8.7G); "
        "top-1: paper Table 1",
        exact=True,
    ),
)
