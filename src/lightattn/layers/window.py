"""Local window attention (Swin Transformer) for any H x W, padding masked."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import torch
from torch import Tensor, nn

from ._base import AttentionBase
from ._blocks import BlockLayout, block_attention, block_layout, from_blocks, to_blocks
from ._checks import check_positive_int
from ._layout import linear_in, linear_out
from ._padding import round_up, tracing
from ._registry import register_attention


def window_dims(h: int, w: int, window_size: int) -> tuple[int, int]:
    """The window shape used on an H x W map: a side shorter than the window is one window.

    While tracing (sizes unknown) the window stays ws x ws and a short side is padded to it:
    the same output, since padded keys are masked, without a shape that depends on H, W.
    """
    if tracing():
        return window_size, window_size
    return min(window_size, h), min(window_size, w)


def swin_shift(side: int, window_size: int) -> int:
    """Swin's cyclic shift along a side: window_size // 2, or 0 when one window covers it."""
    if tracing():
        return torch.sym_min(window_size // 2, torch.sym_max(0, side - window_size) * window_size)
    return window_size // 2 if side > window_size else 0


def relative_position_index(wh: int, ww: int, window_size: int, device) -> Tensor:
    """(wh*ww, wh*ww) indices into a (2*ws-1)² bias table for a wh x ww window (cached per
    shape in eager mode)."""
    if tracing():
        return _relative_position_index(wh, ww, window_size, device)
    return _cached_index(int(wh), int(ww), window_size, torch.device(device))


@lru_cache(maxsize=64)
def _cached_index(wh: int, ww: int, window_size: int, device: torch.device) -> Tensor:
    with torch.inference_mode(False):  # cached tensors must serve autograd calls later
        return _relative_position_index(wh, ww, window_size, device)


def _relative_position_index(wh: int, ww: int, window_size: int, device) -> Tensor:
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
    L the window length. Takes a per-sample `key_padding_mask`: windows are anchored at the
    top-left corner, so an image padded at the bottom/right inside a larger canvas gets the
    output it would get alone (also with `shift`).
    """

    contiguous_tokens = False  # the gather into windows is the one copy a map needs

    fuses_layout = True

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

    def layout(self, h: int, w: int, device) -> BlockLayout:
        """Where each token of an H x W map goes: padded, shifted (with `shift`) windows."""
        ws = self.window_size
        shift = (swin_shift(h, ws), swin_shift(w, ws)) if self.shift else None
        return block_layout(h, w, window_dims(h, w, ws), shift=shift, device=device)

    def _bias(self, wh: int, ww: int, device) -> Tensor | None:
        if self.rel_pos_table is None:
            return None
        index = relative_position_index(wh, ww, self.window_size, device)
        return self.rel_pos_table[index].permute(2, 0, 1)  # (heads, L, L)

    supports_key_padding_mask = True

    def forward_tokens(
        self, x: Tensor, h: int, w: int, key_padding_mask: Tensor | None = None
    ) -> Tensor:
        layout = self.layout(h, w, x.device)
        # move the C-wide input rather than the 3C-wide qkv, unless padding would be projected
        qkv = (
            to_blocks(linear_in(self.qkv, x), layout)
            if layout.padded
            else self.qkv(to_blocks(x, layout))
        )
        out = block_attention(
            qkv, layout, self.num_heads, scale=self.scale,
            bias=self._bias(*layout.block, x.device), key_valid=key_padding_mask,
            dropout_p=self.attn_dropout_p, reference=self.reference,
        )  # fmt: skip
        return self.proj_drop(linear_out(self.proj, from_blocks(out, layout), x))

    def macs(self, h: int, w: int) -> int:
        wh, ww = window_dims(h, w, self.window_size)
        padded = round_up(h, wh) * round_up(w, ww)
        n, c = h * w, self.dim
        return 4 * n * c * c + 2 * padded * wh * ww * c

    def useful_macs(self, h: int, w: int) -> int:
        """Only the (real query, real key) pairs the mask allows, shift regions included."""
        pairs = self.layout(h, w, "cpu").attended_pairs()
        return 4 * h * w * self.dim**2 + 2 * pairs * self.dim
