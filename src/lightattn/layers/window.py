"""Local window attention (Swin Transformer) for any H x W, padding masked."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ._base import AttentionBase
from ._blocks import block_attention
from ._checks import check_positive_int
from ._padding import round_up
from ._registry import register_attention


def window_dims(h: int, w: int, window_size: int) -> tuple[int, int]:
    """The window shape used on an H x W map: a side shorter than the window is one window."""
    return min(window_size, h), min(window_size, w)


def relative_position_index(wh: int, ww: int, window_size: int, device) -> Tensor:
    """(wh*ww, wh*ww) indices into a (2*ws-1)² bias table for a wh x ww window."""
    ys, xs = torch.meshgrid(
        torch.arange(wh, device=device), torch.arange(ww, device=device), indexing="ij"
    )
    coords = torch.stack([ys.flatten(), xs.flatten()])  # (2, L)
    rel = coords[:, :, None] - coords[:, None, :] + (window_size - 1)
    return rel[0] * (2 * window_size - 1) + rel[1]


@register_attention("window")
class WindowAttention(AttentionBase):
    """Swin window attention: softmax inside non-overlapping ws x ws windows.

    (B, C, H, W) -> (B, C, H, W), or (B, N, C) with hw -> (B, N, C).
    Liu et al., "Swin Transformer", ICCV 2021. Options: `shift` (cyclic shift by ws // 2 with
    the Swin mask), `rel_pos_bias` (learned (2ws-1)² table per head). Any H, W: the map is
    padded to a multiple of ws and the padded keys are masked; a side shorter than ws is
    taken as one window. MACs = 3NC² + 2·Np·L·C + NC² with Np the padded token count and
    L the window length.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int | None = None,
        window_size: int = 7,
        shift: bool = False,
        rel_pos_bias: bool = True,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        reference: bool = False,
    ) -> None:
        super().__init__(dim, num_heads, attn_drop, proj_drop, reference)
        self.window_size = check_positive_int("window_size", window_size)
        self.shift = bool(shift)
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.rel_pos_table = None
        if rel_pos_bias:
            table = torch.zeros((2 * window_size - 1) ** 2, self.num_heads)
            self.rel_pos_table = nn.Parameter(nn.init.trunc_normal_(table, std=0.02))

    def settings(self) -> dict[str, Any]:
        return {
            "window_size": self.window_size,
            "shift": self.shift,
            "rel_pos_bias": self.rel_pos_table is not None,
        }

    def _shifts(self, h: int, w: int) -> tuple[int, int]:
        if not self.shift:
            return 0, 0
        ws = self.window_size
        return (ws // 2 if h > ws else 0), (ws // 2 if w > ws else 0)

    def _bias(self, wh: int, ww: int, device) -> Tensor | None:
        if self.rel_pos_table is None:
            return None
        index = relative_position_index(wh, ww, self.window_size, device)
        return self.rel_pos_table[index].permute(2, 0, 1)  # (heads, L, L)

    def forward_tokens(self, x: Tensor, h: int, w: int) -> Tensor:
        b, n, c = x.shape
        block = window_dims(h, w, self.window_size)
        out = block_attention(
            self.qkv(x).view(b, h, w, 3 * c), block, self.num_heads,
            scale=self.scale, shift=self._shifts(h, w), bias=self._bias(*block, x.device),
            dropout_p=self.attn_dropout_p, reference=self.reference,
        )  # fmt: skip
        return self.proj_drop(self.proj(out.reshape(b, n, c)))

    def macs(self, h: int, w: int) -> int:
        wh, ww = window_dims(h, w, self.window_size)
        padded = round_up(h, wh) * round_up(w, ww)
        n, c = h * w, self.dim
        return 4 * n * c * c + 2 * padded * wh * ww * c
