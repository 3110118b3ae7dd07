"""PVTv2 (Wang et al., "PVT v2: Improved Baselines with Pyramid Vision Transformer",
Computational Visual Media 2022), laid out as timm 1.0's `PyramidVisionTransformerV2` so
that its checkpoints load (`load_timm_state_dict`)."""

from __future__ import annotations

from ._args import one_of, per_stage, positive_int, stage_depths, stage_dims
from ._family import build_family
from ._registry import Published, register_family, register_model
from .backbone import AttnSpec, Backbone, StageSpec

LINEAR_POOL = 7  # PVTv2-li pools keys and values to 7 x 7
DEFAULT_DIMS = (64, 128, 256, 512)


def pvt_stages(
    *,
    patch_size: int,
    embed_dims: object,
    depths: object,
    num_heads: object,
    sr_ratios: object,
    mlp_ratios: object,
    linear: bool,
) -> list[StageSpec]:
    """Overlapping patch embedding (7x7 stride 4, then 3x3 stride 2 per stage), blocks with
    spatial-reduction attention and the depthwise-conv FFN, a LayerNorm closing each stage."""
    depths = stage_depths(depths)
    n = len(depths)
    dims = stage_dims(embed_dims, n)
    heads = per_stage("num_heads", num_heads, n)
    ratios = per_stage("mlp_ratios", mlp_ratios, n)
    sr = per_stage("sr_ratios", sr_ratios, n)
    patch_size = positive_int("patch_size", patch_size)
    stages = []
    for i in range(n):
        kwargs = {"pool_size": LINEAR_POOL} if linear else {"sr_ratio": sr[i]}
        stages.append(
            StageSpec(
                dim=dims[i],
                depth=depths[i],
                num_heads=heads[i],
                pattern=(AttnSpec("sra", kwargs),),
                mlp_ratio=ratios[i],
                ffn="conv",
                ffn_relu=linear,
                downsample="overlap",
                stride=patch_size if i == 0 else 2,
                kernel=2 * patch_size - 1 if i == 0 else 3,
                norm=True,
            )
        )
    return stages


@register_family("pvt_v2")
def pvt_v2(
    *,
    patch_size: int = 4,
    in_chans: int = 3,
    num_classes: int | None = None,
    embed_dims: int | tuple[int, ...] | None = None,
    embed_dim: int | tuple[int, ...] | None = None,
    depths: tuple[int, ...] = (3, 4, 6, 3),
    num_heads: int | tuple[int, ...] = (1, 2, 4, 8),
    sr_ratios: int | tuple[int, ...] | None = None,
    mlp_ratios: float | tuple[float, ...] | None = None,
    mlp_ratio: float | None = None,
    qkv_bias: bool = True,
    linear: bool = False,
    drop_rate: float = 0.0,
    proj_drop_rate: float = 0.0,
    attn_drop_rate: float = 0.0,
    drop_path_rate: float = 0.0,
    img_size: int | tuple[int, int] | None = None,
    attn: str | None = None,
    attn_kwargs: object = None,
    features_only: bool = False,
) -> Backbone:
    """PVTv2 with timm's keyword names. (B, in_chans, H, W) -> (B, num_classes).

    `linear=True` (PVTv2-li): keys and values from a 7x7 average pool + 1x1 conv + LayerNorm
    + GELU (`sra` with pool_size=7; on maps smaller than 7 the pool keeps the map, where timm
    would upsample it), and a ReLU in the FFN; `sr_ratios` then has no use and giving it is
    a conflict. LayerNorm eps 1e-6 in the blocks and stage norms, as timm. Any H, W >= 1.
    """
    if linear and sr_ratios is not None:
        raise ValueError(
            f"conflicting arguments linear=True and sr_ratios={sr_ratios!r}: the linear "
            "variant pools keys and values to 7x7 instead of a reduction ratio"
        )
    stages = pvt_stages(
        patch_size=patch_size,
        embed_dims=one_of(("embed_dims", "embed_dim"), (embed_dims, embed_dim), DEFAULT_DIMS),
        depths=depths,
        num_heads=num_heads,
        sr_ratios=(8, 4, 2, 1) if sr_ratios is None else sr_ratios,
        mlp_ratios=one_of(("mlp_ratios", "mlp_ratio"), (mlp_ratios, mlp_ratio), (8, 8, 4, 4)),
        linear=bool(linear),
    )
    return build_family(stages, locals(), final_norm=False, norm_eps=1e-6)


PVT_PAPER = "Wang et al., PVT v2, Computational Visual Media 2022"
B1_B2 = {"embed_dims": (64, 128, 320, 512), "num_heads": (1, 2, 5, 8), "drop_path_rate": 0.1}
# timm's GMACs leave out the attention products (its profiler does not see the fused
# scaled_dot_product_attention); the papers' rounded totals include them.
_PVT_MODELS = {
    "pvt_v2_b0": (
        {"embed_dims": (32, 64, 160, 256), "depths": (2, 2, 2, 2), "num_heads": (1, 2, 5, 8),
         "drop_path_rate": 0.1},
        Published(3.67, None, 70.5, "params: timm pvt_v2_b0 (3.67M; paper 3.4M, 0.6G); "
                  "top-1: paper Table 2", exact=True),
    ),
    "pvt_v2_b1": (
        {**B1_B2, "depths": (2, 2, 2, 2)},
        Published(14.01, 2.03, 78.7, "params/GMACs: timm pvt_v2_b1 (14.01M, 2.03G without "
                  "attention products; paper 13.1M, 2.1G); top-1: paper Table 2",
                  exact=True, gmacs_without_attention=True),
    ),
    "pvt_v2_b2": (
        {**B1_B2, "depths": (3, 4, 6, 3)},
        Published(25.36, 3.88, 82.0, "params/GMACs: timm pvt_v2_b2 (25.36M, 3.88G without "
                  "attention products; paper 25.4M, 4.0G); top-1: paper Table 2",
                  exact=True, gmacs_without_attention=True),
    ),
    "pvt_v2_b2_li": (
        {**B1_B2, "depths": (3, 4, 6, 3), "linear": True},
        Published(22.55, 3.75, 82.1, "params/GMACs: timm pvt_v2_b2_li (22.55M, 3.75G "
                  "without attention products; paper 22.6M, 3.9G); top-1: paper Table 2",
                  exact=True, gmacs_without_attention=True),
    ),
}  # fmt: skip
for _name, (_defaults, _published) in _PVT_MODELS.items():
    register_model(_name, "pvt_v2", _defaults, PVT_PAPER, _published)
