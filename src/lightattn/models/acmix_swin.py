"""ACmix-Swin (Pan et al., "On the Integration of Self-Attention and Convolution", CVPR 2022):
Swin with every block's attention made ACmix (window attention and a shift-initialised
grouped convolution sharing the qkv projection)."""

from __future__ import annotations

from ._args import one_of, positive_int
from ._family import build_family
from ._registry import Published, register_family, register_model
from .backbone import AttnSpec, Backbone
from .swin import swin_stages


@register_family("acmix_swin")
def acmix_swin(
    *,
    patch_size: int = 4,
    in_chans: int = 3,
    num_classes: int | None = None,
    embed_dim: int | tuple[int, ...] | None = None,
    embed_dims: tuple[int, ...] | None = None,
    depths: tuple[int, ...] = (2, 2, 6, 2),
    num_heads: int | tuple[int, ...] = (3, 6, 12, 24),
    window_size: int | tuple[int, ...] = 7,
    kernel_conv: int = 3,
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
    """Swin-T layout with `acmix` (att="window", kernel_att = window_size, kernel_conv) in
    every block. (B, in_chans, H, W) -> (B, num_classes).

    Differences from the released ACmix-Swin: lightattn's `acmix` has no shifted-window
    option, so no block is shifted (the release shifts every other block, rolling the conv
    path's input too), and its position term is ACmix's learned 1x1 conv of relative
    coordinates rather than Swin's bias table.
    """
    kernel_conv = positive_int("kernel_conv", kernel_conv)

    def pattern(window: int) -> tuple[AttnSpec, ...]:
        return (
            AttnSpec("acmix", {"att": "window", "kernel_att": window, "kernel_conv": kernel_conv}),
        )

    stages = swin_stages(
        pattern,
        patch_size=patch_size,
        embed_dim=one_of(("embed_dim", "embed_dims"), (embed_dim, embed_dims), 96),
        depths=depths,
        num_heads=num_heads,
        window_size=window_size,
        mlp_ratio=one_of(("mlp_ratio", "mlp_ratios"), (mlp_ratio, mlp_ratios), 4.0),
    )
    return build_family(stages, locals())


register_model(
    "acmix_swin_t",
    "acmix_swin",
    {"embed_dim": 96, "depths": (2, 2, 6, 2), "num_heads": (3, 6, 12, 24), "drop_path_rate": 0.2},
    "Pan et al., On the Integration of Self-Attention and Convolution (ACmix), CVPR 2022",
    Published(
        28.65,
        4.6,
        81.9,
        "params: count of the released Swin-T ACmix modules (Swin-T 28.29M + per block fc "
        "27h+9, dep_conv 82C, 2 rates = 28.65M; the README and paper print 30M); GMACs, "
        "top-1: ACmix README (4.6G, 81.9%)",
        exact=True,
    ),
)
