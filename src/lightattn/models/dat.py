"""DAT (Xia et al., "Vision Transformer with Deformable Attention", CVPR 2022): Swin-like
stages whose later blocks alternate local window attention and deformable attention."""

from __future__ import annotations

from collections.abc import Sequence

from ._args import one_of, per_stage, positive_int, stage_depths, stage_dims
from ._family import build_family
from ._registry import Published, register_family, register_model
from .backbone import AttnSpec, Backbone, StageSpec

BLOCK_LETTERS = ("L", "S", "D")


def block_spec(letter: object, stage: int, settings: dict[str, object]) -> AttnSpec:
    """'L' local window, 'S' shifted window, 'D' deformable attention (DAT's letters)."""
    ws = settings["window_size"]
    if letter == "L":
        return AttnSpec("window", {"window_size": ws, "shift": False})
    if letter == "S":
        return AttnSpec("window", {"window_size": ws, "shift": True})
    if letter == "D":
        return AttnSpec(
            "deformable",
            {
                "n_groups": settings["groups"],
                "stride": settings["stride"],
                "offset_range_factor": settings["offset_range_factor"],
                "offset_kernel_size": settings["ksize"],
                "pos": "rpb" if settings["use_pe"] else "none",
                "rpb_size": settings["rpb_size"],
            },
        )
    raise ValueError(f"stage_spec[{stage}] has block {letter!r}; known blocks: {BLOCK_LETTERS}")


def dat_stages(
    *,
    patch_size: int,
    img_size: int,
    embed_dim: object,
    depths: object,
    num_heads: object,
    window_size: object,
    mlp_ratio: object,
    stage_spec: Sequence[Sequence[str]],
    groups: object,
    strides: object,
    offset_range_factor: object,
    use_pes: object,
    ksizes: object,
) -> list[StageSpec]:
    """Patch embedding (conv k = s = patch_size + LayerNorm), then a 2x2 stride-2 conv (no
    bias) + LayerNorm before every later stage; blocks norm -> attention -> norm -> MLP, the
    attention of block j of stage i from stage_spec[i][j] (repeated if the depth is longer).
    The deformable blocks' position-bias table spans the stage's map at `img_size`."""
    depths = stage_depths(depths)
    n = len(depths)
    dims = stage_dims(embed_dim, n)
    spec = per_stage("stage_spec", stage_spec, n)
    heads = per_stage("num_heads", num_heads, n)
    ratios = per_stage("mlp_ratio", mlp_ratio, n)
    columns = {
        "window_size": per_stage("window_size", window_size, n),
        "groups": per_stage("groups", groups, n),
        "stride": per_stage("strides", strides, n),
        "offset_range_factor": per_stage("offset_range_factor", offset_range_factor, n),
        "use_pe": per_stage("use_pes", use_pes, n),
        "ksize": per_stage("ksizes", ksizes, n),
    }
    patch_size = positive_int("patch_size", patch_size)
    stages = []
    for i in range(n):
        settings = {key: values[i] for key, values in columns.items()}
        settings["rpb_size"] = max(1, img_size // (patch_size * 2**i))
        letters = tuple(spec[i]) if not isinstance(spec[i], str) else (spec[i],)
        stages.append(
            StageSpec(
                dim=dims[i],
                depth=depths[i],
                num_heads=heads[i],
                pattern=tuple(block_spec(letter, i, settings) for letter in letters),
                mlp_ratio=ratios[i],
                downsample="patch" if i == 0 else "conv",
                stride=patch_size if i == 0 else 2,
            )
        )
    return stages


@register_family("dat")
def dat(
    *,
    patch_size: int = 4,
    in_chans: int = 3,
    num_classes: int | None = None,
    img_size: int = 224,
    embed_dim: int | tuple[int, ...] | None = None,
    embed_dims: tuple[int, ...] | None = None,
    depths: tuple[int, ...] = (2, 2, 6, 2),
    num_heads: int | tuple[int, ...] = (3, 6, 12, 24),
    window_size: int | tuple[int, ...] = 7,
    mlp_ratio: float | None = None,
    mlp_ratios: tuple[float, ...] | None = None,
    stage_spec: Sequence[Sequence[str]] = (("L", "S"), ("L", "S"), ("L", "D"), ("L", "D")),
    groups: int | tuple[int, ...] = (1, 1, 3, 6),
    strides: int | tuple[int, ...] = 1,
    offset_range_factor: float | tuple[float, ...] = 2.0,
    use_pes: bool | tuple[bool, ...] = True,
    ksizes: int | tuple[int, ...] = (9, 7, 5, 3),
    qkv_bias: bool = True,
    drop_rate: float = 0.0,
    proj_drop_rate: float = 0.0,
    attn_drop_rate: float = 0.0,
    drop_path_rate: float = 0.0,
    attn: str | None = None,
    attn_kwargs: object = None,
    features_only: bool = False,
) -> Backbone:
    """DAT with timm's keyword names and the official ones for the deformable blocks
    (`stage_spec` letters L/S/D, `groups`, `strides`, `offset_range_factor`, `use_pes`,
    `ksizes` = offset-network kernel). (B, in_chans, H, W) -> (B, num_classes).

    Differences from the release: shifted windows shift by window_size // 2 (3 for 7; DAT
    uses ceil(window_size / 2) = 4), and the deformable blocks use lightattn's `deformable`
    (grid_sample with align_corners=False, position bias sampled at the query-key
    displacement measured in pixels of the construction size; DAT samples with
    align_corners=True).
    """
    stages = dat_stages(
        patch_size=patch_size,
        img_size=positive_int("img_size", img_size),
        embed_dim=one_of(("embed_dim", "embed_dims"), (embed_dim, embed_dims), 96),
        depths=depths,
        num_heads=num_heads,
        window_size=window_size,
        mlp_ratio=one_of(("mlp_ratio", "mlp_ratios"), (mlp_ratio, mlp_ratios), 4.0),
        stage_spec=stage_spec,
        groups=groups,
        strides=strides,
        offset_range_factor=offset_range_factor,
        use_pes=use_pes,
        ksizes=ksizes,
    )
    return build_family(stages, locals())


register_model(
    "dat_t",
    "dat",
    {
        "embed_dim": 96,
        "depths": (2, 2, 6, 2),
        "num_heads": (3, 6, 12, 24),
        "stage_spec": (("L", "S"), ("L", "S"), ("L", "D", "L", "D", "L", "D"), ("L", "D")),
        "groups": (1, 1, 3, 6),
        "strides": 1,
        "offset_range_factor": 2.0,
        "use_pes": (False, False, True, True),
        "ksizes": (9, 7, 5, 3),
        "drop_path_rate": 0.2,
    },
    "Xia et al., Vision Transformer with Deformable Attention (DAT), CVPR 2022",
    Published(
        28.3,
        4.56,
        82.0,
        "params: the released CVPR 2022 DAT-T modules count 28.32M; GMACs 4.56G (issue 10's "
        "reference); the paper's Table 1 rounds to 29M, 4.6G; top-1: paper Table 1",
        exact=True,
    ),
)
