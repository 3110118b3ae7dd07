"""LITv2 (Pan, Cai and Zhuang, "Fast Vision Transformers with HiLo Attention", NeurIPS 2022):
FFN-only early stages, HiLo attention later, deformable token merging between stages."""

from __future__ import annotations

from ._args import one_of, per_stage, positive_int, stage_depths, stage_dims
from ._family import build_family
from ._registry import Published, register_family, register_model
from .backbone import AttnSpec, Backbone, StageSpec


def litv2_stages(
    *,
    patch_size: int,
    embed_dim: object,
    depths: object,
    num_heads: object,
    mlp_ratio: object,
    has_msa: object,
    local_ws: object,
    alpha: float,
) -> list[StageSpec]:
    """Patch embedding (conv k = s = patch_size + LayerNorm), DTM before every later stage;
    every block's FFN has the 3x3 depthwise conv; stages with `has_msa` 0 have no attention,
    the others HiLo with window `local_ws` (1 = every head global, plain MSA)."""
    depths = stage_depths(depths)
    n = len(depths)
    dims = stage_dims(embed_dim, n)
    heads = per_stage("num_heads", num_heads, n)
    ratios = per_stage("mlp_ratio", mlp_ratio, n)
    msa = per_stage("has_msa", has_msa, n)
    windows = per_stage("local_ws", local_ws, n)
    stages = []
    for i in range(n):
        attn = None
        if msa[i]:
            ws = positive_int(f"local_ws[{i}]", windows[i])
            attn = AttnSpec("hilo", {"window_size": ws, "alpha": alpha})
        stages.append(
            StageSpec(
                dim=dims[i],
                depth=depths[i],
                num_heads=heads[i],
                pattern=(attn,),
                mlp_ratio=ratios[i],
                ffn="conv",
                downsample="patch" if i == 0 else "dtm",
                stride=positive_int("patch_size", patch_size) if i == 0 else 2,
            )
        )
    return stages


@register_family("litv2")
def litv2(
    *,
    patch_size: int = 4,
    in_chans: int = 3,
    num_classes: int | None = None,
    embed_dim: int | tuple[int, ...] | None = None,
    embed_dims: tuple[int, ...] | None = None,
    depths: tuple[int, ...] = (2, 2, 6, 2),
    num_heads: int | tuple[int, ...] = (3, 6, 12, 24),
    mlp_ratio: float | None = None,
    mlp_ratios: tuple[float, ...] | None = None,
    alpha: float = 0.9,
    local_ws: int | tuple[int, ...] = (0, 0, 2, 1),
    has_msa: int | tuple[int, ...] = (0, 0, 1, 1),
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
    """LITv2 with the official repository's keyword names (`alpha`, `local_ws`, `has_msa`)
    and timm's for the rest. (B, in_chans, H, W) -> (B, num_classes).

    `attn="name"` swaps the HiLo stages only; the FFN-only stages stay FFN-only. DTM is a
    2x2 stride-2 deformable conv -> BatchNorm -> GELU; in training, BatchNorm needs more
    than one value per channel (a batch of one 32 x 32 image ends at a 1 x 1 map: use eval
    mode or a larger batch there).
    """
    stages = litv2_stages(
        patch_size=patch_size,
        embed_dim=one_of(("embed_dim", "embed_dims"), (embed_dim, embed_dims), 96),
        depths=depths,
        num_heads=num_heads,
        mlp_ratio=one_of(("mlp_ratio", "mlp_ratios"), (mlp_ratio, mlp_ratios), 4.0),
        has_msa=has_msa,
        local_ws=local_ws,
        alpha=alpha,
    )
    return build_family(stages, locals())


register_model(
    "litv2_s",
    "litv2",
    {
        "embed_dim": 96,
        "depths": (2, 2, 6, 2),
        "num_heads": (3, 6, 12, 24),
        "alpha": 0.9,
        "local_ws": (0, 0, 2, 1),
        "drop_path_rate": 0.2,
    },
    "Pan, Cai and Zhuang, Fast Vision Transformers with HiLo Attention (LITv2), NeurIPS 2022",
    Published(
        28.0,
        3.7,
        82.0,
        "LITv2 paper Table 1: LITv2-S 28M, 3.7G, 82.0%, 1,471 img/s on an RTX 3090 (Swin-T "
        "1,206); the released modules count 27.84M",
    ),
)
