"""Grid attention (MaxViT): sparse, dilated global attention for any H x W, padding masked."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from ._base import AttentionBase
from ._blocks import block_attention, block_layout, from_blocks, to_blocks
from ._checks import check_positive_int
from ._layout import linear_in, linear_out
from ._padding import round_up
from ._registry import register_attention
from .window import window_dims


@register_attention("grid")
class GridAttention(AttentionBase):
    """MaxViT grid attention: the map is cut into a g x g grid of cells, and each pixel attends
    to the g² pixels that hold its position in every cell, i.e. a global set spaced H/g rows
    and W/g columns apart.

    Tu et al., "MaxViT: Multi-Axis Vision Transformer", ECCV 2022.
    (B, C, H, W) -> (B, C, H, W), or (B, N, C) with hw -> (B, N, C).
    Any H, W: each side is padded to a multiple of g (a side shorter than g uses g = side)
    and padded keys are masked. MACs = 4NC² + 2·Np·g²·C, Np the padded token count.
    """

    fuses_layout = True

    def __init__(
        self,
        dim: int,
        num_heads: int | None = None,
        grid_size: int = 7,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        reference: bool = False,
    ) -> None:
        super().__init__(dim, num_heads, attn_drop, proj_drop, reference)
        self.grid_size = check_positive_int("grid_size", grid_size)
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def settings(self) -> dict[str, Any]:
        return {"grid_size": self.grid_size}

    def _dims(self, h: int, w: int) -> tuple[int, int, int, int]:
        gh, gw = window_dims(h, w, self.grid_size)
        return gh, gw, round_up(h, gh), round_up(w, gw)

    def forward_tokens(self, x: Tensor, h: int, w: int) -> Tensor:
        gh, gw, _, _ = self._dims(h, w)
        layout = block_layout(h, w, (gh, gw), dilated=True, device=x.device)
        qkv = (
            to_blocks(linear_in(self.qkv, x), layout)
            if layout.padded
            else self.qkv(to_blocks(x, layout))
        )
        out = block_attention(
            qkv, layout, self.num_heads, scale=self.scale, dropout_p=self.attn_dropout_p,
            reference=self.reference,
        )  # fmt: skip
        return self.proj_drop(linear_out(self.proj, from_blocks(out, layout), x))

    def macs(self, h: int, w: int) -> int:
        gh, gw, hp, wp = self._dims(h, w)
        n, c = h * w, self.dim
        return 4 * n * c * c + 2 * hp * wp * gh * gw * c

    def useful_macs(self, h: int, w: int) -> int:
        """Only the (real query, real key) pairs of each position class."""
        gh, gw, _, _ = self._dims(h, w)
        pairs = block_layout(h, w, (gh, gw), dilated=True).attended_pairs()
        return 4 * h * w * self.dim**2 + 2 * pairs * self.dim
