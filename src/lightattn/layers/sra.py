"""Spatial-reduction attention (PVT, PVTv2): all queries, keys and values from a reduced map."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._attend import attend
from ._base import AttentionBase, as_map, as_tokens
from ._checks import check_choice, check_positive_int
from ._layout import conv_channels_last, linear_in, linear_out
from ._padding import round_up, tracing
from ._registry import register_attention


def channels_last_tokens(x: Tensor) -> Tensor:
    """(B, C, H, W) conv output -> (B, N, C): a view for a channels_last map (what a conv of
    tokens returns), and no stride guard on the reduced size while exporting."""
    b, c = x.shape[:2]
    return x.permute(0, 2, 3, 1).reshape(b, -1, c)


def _pool_matrix(n, out, like: Tensor) -> Tensor:
    """(out, n) averaging matrix of adaptive average pooling from n to out cells: row i
    averages inputs floor(i·n/out) .. ceil((i+1)·n/out) - 1, as `adaptive_avg_pool2d`."""
    i = torch.arange(out, device=like.device)[:, None]
    j = torch.arange(n, device=like.device)[None]
    start, end = i * n // out, ((i + 1) * n + out - 1) // out
    member = ((j >= start) & (j < end)).to(like.dtype)
    return member / member.sum(-1, keepdim=True)


def adaptive_avg_pool(x: Tensor, size: tuple[int, int]) -> Tensor:
    """`F.adaptive_avg_pool2d` of a (B, C, H, W) map; while tracing, two matmuls with
    averaging matrices built from the (symbolic) sizes, because the exported decomposition
    of adaptive pooling bakes in the trace-time input size."""
    if not tracing():
        return F.adaptive_avg_pool2d(x, size)
    rows = _pool_matrix(x.shape[-2], size[0], x)
    cols = _pool_matrix(x.shape[-1], size[1], x)
    return rows @ x @ cols.transpose(0, 1)


@register_attention("sra")
class SpatialReductionAttention(AttentionBase):
    """Every pixel queries keys and values computed from a spatially reduced map.

    Wang et al., "Pyramid Vision Transformer", ICCV 2021 (PVT) and "PVT v2", CVMJ 2022.
    (B, C, H, W) -> (B, C, H, W), or (B, N, C) with hw -> (B, N, C).

    Reductions:
    - `reduction="conv"` (PVTv1, default; `sr_ratio` defaults to 2): conv with
      kernel = stride = `sr_ratio`, then LayerNorm. A map not divisible by sr_ratio is
      padded with zeros, so a partial border patch is the weighted sum of its real pixels
      only (nothing is dropped).
    - `reduction="avg"`: average pooling sr_ratio x sr_ratio (ceil mode: a partial border
      patch averages its real pixels only), no conv, no norm. This is HiLo's Lo-Fi reduction.
    - `pool_size=P` (PVTv2 "linear SRA"): adaptive average pooling to P x P (min with the
      map size), 1x1 conv, LayerNorm, GELU. Cost linear in N. Not combinable with
      `sr_ratio` or `reduction`.
    sr_ratio = 1 without pool_size is plain mhsa. MACs = NC² (q) + 2·Nr·C² (kv) + the
    reduction conv + 2·N·Nr·C + NC² (proj), Nr the reduced token count.
    """

    fuses_layout = True

    def __init__(
        self,
        dim: int,
        num_heads: int | None = None,
        sr_ratio: int | None = None,
        pool_size: int | None = None,
        reduction: str | None = None,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        reference: bool = False,
    ) -> None:
        super().__init__(dim, num_heads, attn_drop, proj_drop, reference)
        if pool_size is not None and (sr_ratio is not None or reduction is not None):
            raise ValueError(
                f"pool_size={pool_size!r} (PVTv2 linear SRA) cannot be combined with "
                f"sr_ratio={sr_ratio!r} or reduction={reduction!r}"
            )
        self.sr_ratio = check_positive_int("sr_ratio", 2 if sr_ratio is None else sr_ratio)
        self.pool_size = None if pool_size is None else check_positive_int("pool_size", pool_size)
        reduction = "conv" if reduction is None else reduction
        self.reduction = check_choice("reduction", reduction, ("conv", "avg"))
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.sr = self.norm = None
        if self.pool_size is not None:
            self.sr = nn.Conv2d(dim, dim, 1)
            self.norm = nn.LayerNorm(dim)
        elif self.sr_ratio > 1 and reduction == "conv":
            self.sr = nn.Conv2d(dim, dim, self.sr_ratio, stride=self.sr_ratio)
            self.norm = nn.LayerNorm(dim)

    def settings(self) -> dict[str, Any]:
        if self.pool_size is not None:
            return {"pool_size": self.pool_size}
        return {"sr_ratio": self.sr_ratio, "reduction": self.reduction}

    def reduced_size(self, h: int, w: int) -> tuple[int, int]:
        if self.pool_size is not None:
            return min(self.pool_size, h), min(self.pool_size, w)
        r = self.sr_ratio
        return (h + r - 1) // r, (w + r - 1) // r  # no negative operands: exported as ONNX Div

    def reduce(self, x: Tensor, h: int, w: int) -> Tensor:
        """(B, N, C) tokens -> (B, Nr, C) reduced tokens."""
        if self.pool_size is not None:
            pooled = adaptive_avg_pool(as_map(x, h, w), self.reduced_size(h, w))
            return F.gelu(self.norm(as_tokens(self.sr(pooled))))
        r = self.sr_ratio
        if r == 1:
            return x
        if self.reduction == "avg":
            return as_tokens(F.avg_pool2d(as_map(x, h, w), r, r, ceil_mode=True))
        pad_h, pad_w = round_up(h, r) - h, round_up(w, r) - w
        x_map = as_map(x, h, w)
        if tracing() or pad_h or pad_w:
            x_map = F.pad(x_map, (0, pad_w, 0, pad_h))
        return self.norm(channels_last_tokens(conv_channels_last(self.sr, x_map)))

    def forward_tokens(self, x: Tensor, h: int, w: int) -> Tensor:
        q = self.split_heads(linear_in(self.q, x))
        k, v = self.split_kv(linear_in(self.kv, self.reduce(x, h, w)))
        out = attend(
            q, k, v,
            scale=self.scale, dropout_p=self.attn_dropout_p, reference=self.reference,
        )  # fmt: skip
        return self.proj_drop(linear_out(self.proj, self.merge_heads(out), x))

    def macs(self, h: int, w: int) -> int:
        rh, rw = self.reduced_size(h, w)
        n, nr, c = h * w, rh * rw, self.dim
        reduction = 0
        if self.pool_size is not None:
            reduction = nr * c * c
        elif self.sr is not None:
            reduction = nr * c * c * self.sr_ratio**2
        return 2 * n * c * c + 2 * nr * c * c + reduction + 2 * n * nr * c
