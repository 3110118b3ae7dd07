"""Criss-cross axial attention (CCNet): one softmax over a pixel's row and column."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._attend import attend, softmax
from ._base import AttentionBase
from ._layout import linear_in, linear_out
from ._registry import register_attention


def criss_cross_mask(h: int, w: int, device) -> Tensor:
    """(N, N) bool: True where two pixels share a row or a column."""
    rows = torch.arange(h, device=device).repeat_interleave(w)
    cols = torch.arange(w, device=device).repeat(h)
    return (rows[:, None] == rows[None, :]) | (cols[:, None] == cols[None, :])


@register_attention("axial")
class AxialAttention(AttentionBase):
    """Criss-cross attention: each pixel attends, in ONE softmax, to the H + W - 1 pixels of
    its row and its column (itself counted once).

    Huang et al., "CCNet: Criss-Cross Attention for Semantic Segmentation", ICCV 2019.
    (B, C, H, W) -> (B, C, H, W), or (B, N, C) with hw -> (B, N, C).
    Cost O(N (H + W) C): MACs = 4NC² + 2N(H + W)C. Two layers in a row see the whole map.
    The fast path computes row and column logits separately and joins them in one softmax;
    the reference path is full attention under a row-or-column mask.
    """

    fuses_layout = True

    def __init__(
        self,
        dim: int,
        num_heads: int | None = None,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        reference: bool = False,
    ) -> None:
        super().__init__(dim, num_heads, attn_drop, proj_drop, reference)
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward_tokens(self, x: Tensor, h: int, w: int) -> Tensor:
        q, k, v = self.split_qkv(linear_in(self.qkv, x))  # (B, heads, N, d)
        if self.reference:
            mask = criss_cross_mask(h, w, x.device)
            out = attend(
                q, k, v,
                scale=self.scale, mask=mask, dropout_p=self.attn_dropout_p, reference=True,
            )  # fmt: skip
        else:
            out = self._criss_cross(q, k, v, h, w).flatten(2, 3)
        return self.proj_drop(linear_out(self.proj, self.merge_heads(out), x))

    def _criss_cross(self, q: Tensor, k: Tensor, v: Tensor, h: int, w: int) -> Tensor:
        b, heads, _, d = q.shape
        q, k, v = (t.reshape(b, heads, h, w, d) for t in (q * self.scale, k, v))
        row_logits = q @ k.transpose(-2, -1)  # (B, heads, H, W, W)
        col_logits = (q.transpose(2, 3) @ k.transpose(2, 3).transpose(-2, -1)).transpose(2, 3)
        self_in_col = torch.eye(h, dtype=torch.bool, device=q.device)[:, None, :]
        col_logits = col_logits.masked_fill(self_in_col, float("-inf"))  # (B, heads, H, W, H)
        weights = softmax(torch.cat([row_logits, col_logits], dim=-1), dim=-1)
        weights = F.dropout(weights, self.attn_dropout_p, training=self.attn_dropout_p > 0)
        row_out = weights[..., :w] @ v
        col_out = (weights[..., w:].transpose(2, 3) @ v.transpose(2, 3)).transpose(2, 3)
        return row_out + col_out  # (B, heads, H, W, d)

    def macs(self, h: int, w: int) -> int:
        n, c = h * w, self.dim
        keys = n if self.reference else h + w  # the reference path masks an N x N matrix
        return 4 * n * c * c + 2 * n * keys * c
