"""HiLo attention (LITv2): Hi-Fi window heads and Lo-Fi pooled-key heads, any H x W."""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from ._attend import attend
from ._base import AttentionBase, as_map, as_tokens
from ._blocks import BlockLayout, block_attention, block_layout, from_blocks, to_blocks
from ._checks import check_positive_int
from ._layout import cat_channels, linear_in, linear_out
from ._padding import round_up, tracing
from ._registry import register_attention
from .window import window_dims


def check_alpha(alpha: object) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
        raise ValueError(f"alpha={alpha!r} must be a number in [0, 1]")
    return float(alpha)


def pooled_windows(x: Tensor, layout: BlockLayout) -> Tensor:
    """(B, N, C) -> (B, nB, C): the mean of the real pixels of each block of `layout`, as
    a weighted sum of the gathered blocks: padded pixels get weight 0 and are not counted.
    The reference path, and the export path (no pooling op, whose output strides would tie
    the export to the map size)."""
    b, _, c = x.shape
    blocks = to_blocks(x, layout).view(b, -1, layout.length, c)
    weights = layout.key_valid.to(x.dtype)
    weights = weights / weights.sum(-1, keepdim=True)
    return (blocks * weights[None, :, :, None]).sum(dim=2)


@register_attention("hilo")
class HiLoAttention(AttentionBase):
    """HiLo attention: some heads attend inside local windows (Hi-Fi), the others attend from
    every pixel to a window-averaged map (Lo-Fi); the two outputs are concatenated.

    Pan, Cai and Zhuang, "Fast Vision Transformers with HiLo Attention", NeurIPS 2022 (LITv2).
    (B, C, H, W) -> (B, C, H, W), or (B, N, C) with hw -> (B, N, C).

    With h heads of width d: l = int(h * alpha) Lo-Fi heads (width Cl = l·d) and h - l Hi-Fi
    heads (width Ch = (h-l)·d); `window_size` = 1 makes every head Lo-Fi (plain mhsa).
    - Hi-Fi: qkv Linear(C, 3·Ch), softmax inside non-overlapping ws x ws windows (no position
      bias), proj Linear(Ch, Ch).
    - Lo-Fi: q Linear(C, Cl) on every pixel, kv Linear(C, 2·Cl) on the ws x ws average-pooled
      map, full attention to the pooled tokens, proj Linear(Cl, Cl).
    Output channels: [Hi-Fi, Lo-Fi], no shared projection. A branch with no heads is skipped.
    Any H, W: Hi-Fi windows are padded with their padded keys masked; a partial border window
    is pooled over its real pixels only; a side shorter than ws is one window (as `window`).
    MACs (divisible maps, N = HW, M = N/ws²): Hi-Fi 3NC·Ch + 2N·ws²·Ch + N·Ch²,
    Lo-Fi NC·Cl + 2MC·Cl + 2NM·Cl + N·Cl² (the paper's formula).
    """

    fuses_layout = True

    def __init__(
        self,
        dim: int,
        num_heads: int | None = None,
        window_size: int = 2,
        alpha: float = 0.9,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        reference: bool = False,
    ) -> None:
        super().__init__(dim, num_heads, attn_drop, proj_drop, reference)
        self.window_size = check_positive_int("window_size", window_size)
        self.alpha = check_alpha(alpha)
        self.lofi_heads = self.num_heads if window_size == 1 else int(self.num_heads * self.alpha)
        self.hifi_heads = self.num_heads - self.lofi_heads
        self.hifi_dim = self.hifi_heads * self.head_dim
        self.lofi_dim = self.lofi_heads * self.head_dim
        self.hifi_qkv = self.hifi_proj = self.lofi_q = self.lofi_kv = self.lofi_proj = None
        if self.hifi_heads > 0:
            self.hifi_qkv = nn.Linear(dim, 3 * self.hifi_dim, bias=qkv_bias)
            self.hifi_proj = nn.Linear(self.hifi_dim, self.hifi_dim)
        if self.lofi_heads > 0:
            self.lofi_q = nn.Linear(dim, self.lofi_dim, bias=qkv_bias)
            self.lofi_kv = nn.Linear(dim, 2 * self.lofi_dim, bias=qkv_bias)
            self.lofi_proj = nn.Linear(self.lofi_dim, self.lofi_dim)

    def settings(self) -> dict[str, Any]:
        return {
            "window_size": self.window_size,
            "alpha": self.alpha,
            "hifi_heads": self.hifi_heads,
            "lofi_heads": self.lofi_heads,
        }

    def _split(self, t: Tensor, heads: int) -> Tensor:
        """(B, L, heads*d) -> (B, heads, L, d)."""
        b, n, _ = t.shape
        return t.reshape(b, n, heads, self.head_dim).transpose(1, 2)

    def hifi(self, x: Tensor, h: int, w: int) -> Tensor:
        """(B, N, C) -> (B, N, Ch): attention inside windows, padded keys masked."""
        layout = block_layout(h, w, window_dims(h, w, self.window_size), device=x.device)
        qkv = to_blocks(linear_in(self.hifi_qkv, x), layout)
        out = block_attention(
            qkv, layout, self.hifi_heads, scale=self.scale,
            dropout_p=self.attn_dropout_p, reference=self.reference,
        )  # fmt: skip
        return linear_out(self.hifi_proj, from_blocks(out, layout), x)

    def pool(self, x: Tensor, h: int, w: int) -> Tensor:
        """(B, N, C) -> (B, M, C): ws x ws window means of the real pixels (ws = 1: x)."""
        if self.window_size == 1:
            return x
        wh, ww = window_dims(h, w, self.window_size)
        if self.reference or tracing():
            return pooled_windows(x, block_layout(h, w, (wh, ww), device=x.device))
        # ceil mode clips a border window to the map and divides by its real pixel count
        return as_tokens(F.avg_pool2d(as_map(x, h, w), (wh, ww), ceil_mode=True))

    def lofi(self, x: Tensor, h: int, w: int) -> Tensor:
        """(B, N, C) -> (B, N, Cl): every pixel attends to the pooled map."""
        q = self._split(linear_in(self.lofi_q, x), self.lofi_heads)
        k, v = self.split_kv(linear_in(self.lofi_kv, self.pool(x, h, w)), self.lofi_heads)
        out = attend(
            q, k, v,
            scale=self.scale, dropout_p=self.attn_dropout_p, reference=self.reference,
        )  # fmt: skip
        return linear_out(self.lofi_proj, self.merge_heads(out), x)

    def forward_tokens(self, x: Tensor, h: int, w: int) -> Tensor:
        parts = []
        if self.hifi_heads > 0:
            parts.append(self.hifi(x, h, w))
        if self.lofi_heads > 0:
            parts.append(self.lofi(x, h, w))
        return self.proj_drop(cat_channels(parts))

    def macs(self, h: int, w: int) -> int:
        n, c, ch, cl = h * w, self.dim, self.hifi_dim, self.lofi_dim
        wh, ww = window_dims(h, w, self.window_size)
        padded = round_up(h, wh) * round_up(w, ww)
        pooled = padded // (wh * ww)
        hifi = 3 * n * c * ch + 2 * padded * wh * ww * ch + n * ch * ch
        lofi = n * c * cl + 2 * pooled * c * cl + 2 * n * pooled * cl + n * cl * cl
        return hifi + lofi

    def useful_macs(self, h: int, w: int) -> int:
        """Hi-Fi: only the (real query, real key) pairs of each window."""
        wh, ww = window_dims(h, w, self.window_size)
        padded = round_up(h, wh) * round_up(w, ww)
        pairs = block_layout(h, w, (wh, ww)).attended_pairs()
        return self.macs(h, w) - 2 * (padded * wh * ww - pairs) * self.hifi_dim
