"""Benchmark baselines: plain re-implementations of the attention code users run today.

Speed claims are ratios measured in one process against these, never against numbers from
elsewhere. Each baseline is written from the algorithm of its source (nothing is imported
from timm or the official repositories, which need not be installed), is built from a
lightattn module with `from_lightattn(m)` (the weights are copied, so both compute with the
same values) and returns the same output on the maps where the two agree. Baselines are
inference code: no dropout, no training paths. They are not library paths.

- `TimmSwinWindowAttention`: timm 1.0.x `timm/models/swin_transformer.py`,
  `SwinTransformerBlock._attn` + `WindowAttention`.
- `PvtV2Attention`: timm 1.0.x `timm/models/pvt_v2.py`, `Attention`.
- `OfficialHiLo`: LITv2 (github.com/ziplab/LITv2) `classification/models/attentions.py`,
  `HiLo` (used by `classification/models/litv2.py`).

`compare(cases)` times baseline and lightattn interleaved in one process;
`python -m lightattn.bench.baselines` prints the comparison as a markdown table.
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import lightattn

from .machine import cpu_model, usable_cores

# timm 1.0.x, timm/layers/config.py: use_fused_attn(experimental=False) is True unless
# TIMM_FUSED_ATTN=0; use_fused_attn(experimental=True) is True only with TIMM_FUSED_ATTN=2.
# Swin's WindowAttention asks with experimental=True, PVTv2's Attention without.
TIMM_SWIN_FUSED_DEFAULT = False
TIMM_PVT_FUSED_DEFAULT = True
SWIN_MASK_VALUE = -100.0  # timm's shifted-window mask value (not -inf)


def copy_weights(target: nn.Module, source: nn.Module, renames: Mapping[str, str]) -> None:
    """Copy every parameter of `source` into `target`, renaming by prefix (source -> target).

    Strict: a parameter of either module left unmatched, or a shape mismatch, raises."""
    state = {}
    for key, value in source.named_parameters():
        prefix = next((p for p in renames if key == p or key.startswith(p + ".")), None)
        if prefix is None:
            raise ValueError(
                f"{type(source).__name__}.{key} has no place in {type(target).__name__}"
            )
        state[renames[prefix] + key[len(prefix) :]] = value.detach()
    first = next(source.parameters())
    target.to(device=first.device, dtype=first.dtype)
    target.load_state_dict(state, strict=True)


def check_mechanism(m: nn.Module, name: str, baseline: str) -> None:
    """ValueError unless `m` is a lightattn module registered as `name`."""
    if getattr(m, "name", None) != name:
        raise ValueError(f"{baseline}.from_lightattn needs a lightattn {name!r} module, got {m!r}")


# --------------------------------------------------------------------------------------------
# timm Swin


def swin_window_partition(x: Tensor, window: tuple[int, int]) -> Tensor:
    """(B, Hp, Wp, C) -> (B·nW, wh, ww, C), as timm's window_partition."""
    b, h, w, c = x.shape
    wh, ww = window
    x = x.view(b, h // wh, wh, w // ww, ww, c)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, wh, ww, c)


def swin_window_reverse(windows: Tensor, window: tuple[int, int], h: int, w: int) -> Tensor:
    """(B·nW, wh, ww, C) -> (B, Hp, Wp, C), as timm's window_reverse."""
    wh, ww = window
    c = windows.shape[-1]
    x = windows.view(-1, h // wh, w // ww, wh, ww, c)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, h, w, c)


def swin_relative_position_index(wh: int, ww: int) -> Tensor:
    """(L, L) indices into a (2wh-1)(2ww-1) table, L = wh·ww (timm get_relative_position_index)."""
    ys, xs = torch.meshgrid(torch.arange(wh), torch.arange(ww), indexing="ij")
    coords = torch.stack([ys.flatten(), xs.flatten()])  # (2, L)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0)  # (L, L, 2)
    return (rel[..., 0] + wh - 1) * (2 * ww - 1) + (rel[..., 1] + ww - 1)


def swin_shift_mask(
    h: int, w: int, window: tuple[int, int], shift: tuple[int, int]
) -> Tensor | None:
    """(nW, L, L) mask of the shifted windows, 0 or -100 (timm SwinTransformerBlock.get_attn_mask
    for the padded H x W); None without shift."""
    if not any(shift):
        return None
    (wh, ww), (sh, sw) = window, shift
    hp, wp = -(-h // wh) * wh, -(-w // ww) * ww
    img = torch.zeros(1, hp, wp, 1)
    label = 0
    # python slices with -0 == 0 reproduce timm exactly when one side has no shift
    for rows in (slice(0, -wh), slice(-wh, -sh), slice(-sh, None)):
        for cols in (slice(0, -ww), slice(-ww, -sw), slice(-sw, None)):
            img[:, rows, cols, :] = label
            label += 1
    ids = swin_window_partition(img, window).view(-1, wh * ww)
    diff = ids.unsqueeze(1) - ids.unsqueeze(2)
    return diff.masked_fill(diff != 0, SWIN_MASK_VALUE).masked_fill(diff == 0, 0.0)


@dataclass(frozen=True)
class SwinGeometry:
    """What timm fixes per block for one input resolution: window, shift, the relative
    position index of the window and the shift mask (computed once, as timm's buffer)."""

    window: tuple[int, int]
    shift: tuple[int, int]
    index: Tensor  # (L, L) long
    attn_mask: Tensor | None  # (nW, L, L), 0 / -100


class TimmSwinWindowAttention(nn.Module):
    """timm 1.0.x Swin window attention on (B, N, C) tokens of an H x W map -> (B, N, C).

    Source: timm/models/swin_transformer.py, `SwinTransformerBlock._attn` (without the norm,
    the residual and the MLP) and `WindowAttention.forward`. Per H x W, as timm's block built
    for that input resolution: window = min(ws, side) and shift = ws // 2 only on a side
    longer than the window (`_calc_window_shift`); the shift mask (-100 on pairs from
    different regions) and the relative position index are computed once and cached. Forward:
    roll by -shift, pad bottom/right to a multiple of the window (padded tokens are *not*
    masked, as in timm), partition, qkv Linear, softmax(q·scale @ kᵀ + bias + mask) @ v,
    proj, reverse, crop, roll back. `fused=None` follows timm's default: the matmul/softmax
    path, since Swin asks `use_fused_attn(experimental=True)`, which is off unless
    TIMM_FUSED_ATTN=2; `fused=True` is timm's F.scaled_dot_product_attention path with
    attn_mask = bias + mask expanded to (B·nW, heads, L, L).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: int = 7,
        shift: bool = False,
        qkv_bias: bool = True,
        fused: bool | None = None,
    ) -> None:
        super().__init__()
        self.dim, self.num_heads, self.window_size = dim, num_heads, window_size
        self.target_shift = window_size // 2 if shift else 0
        self.scale = (dim // num_heads) ** -0.5
        self.fused = TIMM_SWIN_FUSED_DEFAULT if fused is None else bool(fused)
        table = torch.zeros((2 * window_size - 1) ** 2, num_heads)
        self.relative_position_bias_table = nn.Parameter(table)
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self._geometry: dict[tuple[int, int, torch.device, torch.dtype], SwinGeometry] = {}

    @classmethod
    def from_lightattn(cls, m: nn.Module, fused: bool | None = None) -> TimmSwinWindowAttention:
        """The baseline of a lightattn `window` module (its qkv, proj and rel_pos_table)."""
        check_mechanism(m, "window", cls.__name__)
        if m.rel_pos_table is None:
            raise ValueError("timm's Swin always has a relative position bias: rel_pos_bias=True")
        base = cls(m.dim, m.num_heads, m.window_size, m.shift, m.qkv.bias is not None, fused)
        renames = {"qkv": "qkv", "proj": "proj", "rel_pos_table": "relative_position_bias_table"}
        copy_weights(base, m, renames)
        return base

    def describe(self) -> str:
        path = "SDPA, TIMM_FUSED_ATTN=2" if self.fused else "matmul/softmax, timm default"
        return f"timm 1.0 Swin ({path})"

    def geometry(self, h: int, w: int, device: torch.device, dtype: torch.dtype) -> SwinGeometry:
        """Window, shift, index and mask for an H x W map (timm `_calc_window_shift`)."""
        key = (h, w, device, dtype)
        if key not in self._geometry:
            ws, s = self.window_size, self.target_shift
            window = (min(ws, h), min(ws, w))
            shift = (0 if h <= ws else s, 0 if w <= ws else s)
            mask = swin_shift_mask(h, w, window, shift)
            self._geometry[key] = SwinGeometry(
                window, shift, swin_relative_position_index(*window).to(device),
                None if mask is None else mask.to(device=device, dtype=dtype),
            )  # fmt: skip
        return self._geometry[key]

    def bias_table(self, window: tuple[int, int]) -> Tensor:
        """((2wh-1)(2ww-1), heads): the table timm holds for this window; for a window smaller
        than ws, the centre of the ws table (relative offsets that exist in both)."""
        ws, (wh, ww) = self.window_size, window
        if window == (ws, ws):
            return self.relative_position_bias_table
        table = self.relative_position_bias_table.view(2 * ws - 1, 2 * ws - 1, -1)
        return table[ws - wh : ws + wh - 1, ws - ww : ws + ww - 1].reshape(-1, self.num_heads)

    def rel_pos_bias(self, geo: SwinGeometry) -> Tensor:
        """(1, heads, L, L), gathered every call as timm's `_get_rel_pos_bias`."""
        length = geo.window[0] * geo.window[1]
        bias = self.bias_table(geo.window)[geo.index.view(-1)].view(length, length, -1)
        return bias.permute(2, 0, 1).contiguous().unsqueeze(0)

    def forward(self, x: Tensor, hw: tuple[int, int]) -> Tensor:
        """(B, N, C) tokens, hw = (H, W) -> (B, N, C)."""
        b, n, c = x.shape
        h, w = hw
        geo = self.geometry(h, w, x.device, x.dtype)
        return self.block_attn(x.view(b, h, w, c), geo).reshape(b, n, c)

    def block_attn(self, x: Tensor, geo: SwinGeometry) -> Tensor:
        """(B, H, W, C) -> (B, H, W, C): timm `SwinTransformerBlock._attn`."""
        _, h, w, c = x.shape
        (wh, ww), shift = geo.window, geo.shift
        if any(shift):
            x = torch.roll(x, shifts=(-shift[0], -shift[1]), dims=(1, 2))
        x = F.pad(x, (0, 0, 0, (ww - w % ww) % ww, 0, (wh - h % wh) % wh))
        hp, wp = x.shape[1], x.shape[2]
        windows = swin_window_partition(x, geo.window).view(-1, wh * ww, c)
        windows = self.window_attention(windows, geo)
        x = swin_window_reverse(windows.view(-1, wh, ww, c), geo.window, hp, wp)
        x = x[:, :h, :w, :].contiguous()
        if any(shift):
            x = torch.roll(x, shifts=shift, dims=(1, 2))
        return x

    def window_attention(self, x: Tensor, geo: SwinGeometry) -> Tensor:
        """(B·nW, L, C) -> (B·nW, L, C): timm `WindowAttention.forward`."""
        b_, n, _ = x.shape
        heads, mask = self.num_heads, geo.attn_mask
        q, k, v = self.qkv(x).reshape(b_, n, 3, heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        if self.fused:
            attn_mask = self.rel_pos_bias(geo)
            if mask is not None:
                nw = mask.shape[0]
                mask = mask.view(1, nw, 1, n, n).expand(b_ // nw, -1, heads, -1, -1)
                attn_mask = attn_mask + mask.reshape(-1, heads, n, n)
            x = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        else:
            attn = (q * self.scale) @ k.transpose(-2, -1)
            attn = attn + self.rel_pos_bias(geo)
            if mask is not None:
                nw = mask.shape[0]
                attn = attn.view(-1, nw, heads, n, n) + mask.unsqueeze(1).unsqueeze(0)
                attn = attn.view(-1, heads, n, n)
            x = attn.softmax(dim=-1) @ v
        return self.proj(x.transpose(1, 2).reshape(b_, n, -1))


# --------------------------------------------------------------------------------------------
# timm PVTv2


class PvtV2Attention(nn.Module):
    """timm 1.0.x PVTv2 spatial-reduction attention on (B, N, C) tokens -> (B, N, C).

    Source: timm/models/pvt_v2.py, `Attention`. q Linear on every token; keys and values from
    kv Linear on the reduced map: sr Conv2d (kernel = stride = sr_ratio) + LayerNorm when
    sr_ratio > 1, the tokens themselves when sr_ratio = 1, or with `linear_attn` (PVTv2-li)
    AdaptiveAvgPool2d(7) + 1x1 Conv2d + LayerNorm + GELU; attention; proj. As timm, a map not
    divisible by sr_ratio loses its border (the strided conv floors; lightattn pads), and a
    map smaller than 7 is upsampled by the adaptive pool (lightattn pools to min(7, side)).
    `fused=None` follows timm's default, F.scaled_dot_product_attention (`use_fused_attn()`,
    on unless TIMM_FUSED_ATTN=0); `fused=False` is the matmul/softmax path.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        sr_ratio: int = 1,
        linear_attn: bool = False,
        qkv_bias: bool = True,
        fused: bool | None = None,
        pool_size: int = 7,
        norm_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.dim, self.num_heads, self.head_dim = dim, num_heads, dim // num_heads
        self.scale = self.head_dim**-0.5
        self.fused = TIMM_PVT_FUSED_DEFAULT if fused is None else bool(fused)
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.pool = self.sr = self.norm = self.act = None
        if linear_attn:
            self.pool = nn.AdaptiveAvgPool2d(pool_size)
            self.sr = nn.Conv2d(dim, dim, kernel_size=1, stride=1)
            self.norm = nn.LayerNorm(dim, eps=norm_eps)
            self.act = nn.GELU()
        elif sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, kernel_size=sr_ratio, stride=sr_ratio)
            self.norm = nn.LayerNorm(dim, eps=norm_eps)

    @classmethod
    def from_lightattn(cls, m: nn.Module, fused: bool | None = None) -> PvtV2Attention:
        """The baseline of a lightattn `sra` module: reduction="conv" (any sr_ratio) or
        pool_size=P (linear SRA; timm fixes P = 7)."""
        check_mechanism(m, "sra", cls.__name__)
        if m.pool_size is None and m.reduction != "conv" and m.sr_ratio > 1:
            raise ValueError(f"timm's PVTv2 has no reduction={m.reduction!r}; use 'conv'")
        base = cls(
            m.dim, m.num_heads, sr_ratio=m.sr_ratio, linear_attn=m.pool_size is not None,
            qkv_bias=m.q.bias is not None, fused=fused, pool_size=m.pool_size or 7,
            norm_eps=m.norm.eps if m.norm is not None else 1e-5,
        )  # fmt: skip
        copy_weights(base, m, {name: name for name in ("q", "kv", "proj", "sr", "norm")})
        return base

    def describe(self) -> str:
        path = "SDPA, timm default" if self.fused else "matmul/softmax, TIMM_FUSED_ATTN=0"
        return f"timm 1.0 PVTv2 ({path})"

    def reduce(self, x: Tensor, h: int, w: int) -> Tensor:
        """(B, N, C) -> (B, Nr, C): the tokens keys and values are computed from."""
        if self.sr is None:
            return x
        b, _, c = x.shape
        x = x.permute(0, 2, 1).reshape(b, c, h, w)
        if self.pool is not None:
            x = self.pool(x)
        x = self.norm(self.sr(x).reshape(b, c, -1).permute(0, 2, 1))
        return x if self.act is None else self.act(x)

    def forward(self, x: Tensor, hw: tuple[int, int]) -> Tensor:
        """(B, N, C) tokens, hw = (H, W) -> (B, N, C)."""
        b, n, c = x.shape
        heads = self.num_heads
        q = self.q(x).reshape(b, n, heads, -1).permute(0, 2, 1, 3)
        kv = self.kv(self.reduce(x, *hw)).reshape(b, -1, 2, heads, self.head_dim)
        k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)
        if self.fused:
            x = F.scaled_dot_product_attention(q, k, v)
        else:
            x = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1) @ v
        return self.proj(x.transpose(1, 2).reshape(b, n, c))


# --------------------------------------------------------------------------------------------
# LITv2 HiLo


class OfficialHiLo(nn.Module):
    """The official LITv2 HiLo attention on (B, N, C) tokens of an H x W map -> (B, N, C).

    Source: github.com/ziplab/LITv2, classification/models/attentions.py, `HiLo` (which takes
    H = W = sqrt(N); the detection/segmentation copies take H, W, as here). With h heads of
    width d: l = int(h·alpha) Lo-Fi heads and h - l Hi-Fi heads (ws = 1: all Lo-Fi).
    Hi-Fi: reshape (B, H, W, C) into ws x ws windows, qkv Linear, (q @ kᵀ)·scale, softmax,
    @ v, proj. Lo-Fi: q Linear on every pixel, AvgPool2d(ws, ws) then kv Linear, softmax
    attention, proj. Output [Hi-Fi, Lo-Fi] concatenated on channels. Plain matmul/softmax,
    as the official code. H and W must be multiples of ws (the official code assumes it).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        qkv_bias: bool = False,
        window_size: int = 2,
        alpha: float = 0.5,
    ) -> None:
        super().__init__()
        head_dim = dim // num_heads
        self.dim, self.ws, self.head_dim = dim, window_size, head_dim
        self.l_heads = num_heads if window_size == 1 else int(num_heads * alpha)
        self.h_heads = num_heads - self.l_heads
        self.l_dim, self.h_dim = self.l_heads * head_dim, self.h_heads * head_dim
        self.scale = head_dim**-0.5
        if self.l_heads > 0:
            self.sr = nn.AvgPool2d(window_size, window_size) if window_size > 1 else None
            self.l_q = nn.Linear(dim, self.l_dim, bias=qkv_bias)
            self.l_kv = nn.Linear(dim, 2 * self.l_dim, bias=qkv_bias)
            self.l_proj = nn.Linear(self.l_dim, self.l_dim)
        if self.h_heads > 0:
            self.h_qkv = nn.Linear(dim, 3 * self.h_dim, bias=qkv_bias)
            self.h_proj = nn.Linear(self.h_dim, self.h_dim)

    @classmethod
    def from_lightattn(cls, m: nn.Module) -> OfficialHiLo:
        """The baseline of a lightattn `hilo` module (its hifi_* and lofi_* layers)."""
        check_mechanism(m, "hilo", cls.__name__)
        first = m.hifi_qkv if m.hifi_qkv is not None else m.lofi_q
        base = cls(m.dim, m.num_heads, first.bias is not None, m.window_size, m.alpha)
        if (base.h_heads, base.l_heads) != (m.hifi_heads, m.lofi_heads):
            raise ValueError(
                f"head split differs: official Hi-Fi/Lo-Fi {base.h_heads}/{base.l_heads}, "
                f"lightattn {m.hifi_heads}/{m.lofi_heads}"
            )
        renames = {
            "hifi_qkv": "h_qkv", "hifi_proj": "h_proj",
            "lofi_q": "l_q", "lofi_kv": "l_kv", "lofi_proj": "l_proj",
        }  # fmt: skip
        copy_weights(base, m, renames)
        return base

    def describe(self) -> str:
        return "LITv2 official HiLo (matmul/softmax)"

    def hifi(self, x: Tensor) -> Tensor:
        """(B, H, W, C) -> (B, H, W, Ch): attention inside ws x ws windows."""
        b, h, w, c = x.shape
        ws, heads = self.ws, self.h_heads
        hg, wg = h // ws, w // ws
        x = x.reshape(b, hg, ws, wg, ws, c).transpose(2, 3)
        qkv = self.h_qkv(x).reshape(b, hg * wg, -1, 3, heads, self.head_dim)
        q, k, v = qkv.permute(3, 0, 1, 4, 2, 5)  # each (B, groups, heads, ws², d)
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        x = (attn @ v).transpose(2, 3).reshape(b, hg, wg, ws, ws, self.h_dim)
        return self.h_proj(x.transpose(2, 3).reshape(b, h, w, self.h_dim))

    def lofi(self, x: Tensor) -> Tensor:
        """(B, H, W, C) -> (B, H, W, Cl): every pixel attends to the ws x ws average-pooled map."""
        b, h, w, c = x.shape
        heads = self.l_heads
        q = self.l_q(x).reshape(b, h * w, heads, self.head_dim).permute(0, 2, 1, 3)
        kv_in = x
        if self.sr is not None:
            kv_in = self.sr(x.permute(0, 3, 1, 2)).reshape(b, c, -1).permute(0, 2, 1)
        kv = self.l_kv(kv_in).reshape(b, -1, 2, heads, self.head_dim).permute(2, 0, 3, 1, 4)
        k, v = kv[0], kv[1]
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        return self.l_proj((attn @ v).transpose(1, 2).reshape(b, h, w, self.l_dim))

    def forward(self, x: Tensor, hw: tuple[int, int]) -> Tensor:
        """(B, N, C) tokens, hw = (H, W) -> (B, N, C)."""
        b, n, c = x.shape
        h, w = hw
        if h % self.ws or w % self.ws:
            raise ValueError(
                f"the official HiLo needs H and W divisible by window_size={self.ws}; got {h}x{w}"
            )
        x = x.reshape(b, h, w, c)
        if self.h_heads == 0:
            return self.lofi(x).reshape(b, n, c)
        if self.l_heads == 0:
            return self.hifi(x).reshape(b, n, c)
        return torch.cat((self.hifi(x), self.lofi(x)), dim=-1).reshape(b, n, c)


BASELINES: dict[str, type[nn.Module]] = {
    "window": TimmSwinWindowAttention,
    "sra": PvtV2Attention,
    "hilo": OfficialHiLo,
}


def baseline_for(m: nn.Module, **kwargs: Any) -> nn.Module:
    """The baseline of a lightattn module (same weights), by its registered name."""
    if m.name not in BASELINES:
        raise ValueError(f"no baseline for {m.name!r}; baselines exist for {sorted(BASELINES)}")
    return BASELINES[m.name].from_lightattn(m, **kwargs)


# --------------------------------------------------------------------------------------------
# Cases and timing


@dataclass(frozen=True)
class Case:
    """One comparison: a lightattn mechanism at one size and its baseline."""

    group: str  # "swin", "pvt" or "hilo"
    label: str
    mechanism: str
    dim: int
    num_heads: int
    hw: tuple[int, int]
    batch: int = 8
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    baseline_kwargs: Mapping[str, Any] = field(default_factory=dict)

    def settings(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.kwargs.items())


def _swin(label: str, dim: int, heads: int, side: int, shift: bool) -> Case:
    kwargs = {"window_size": 7, "shift": shift}
    return Case("swin", label, "window", dim, heads, (side, side), kwargs=kwargs)


def _pvt(label: str, dim: int, heads: int, side: int, sr: int) -> Case:
    return Case("pvt", label, "sra", dim, heads, (side, side), kwargs={"sr_ratio": sr})


def _hilo(label: str, dim: int, heads: int, side: int, ws: int, batch: int = 8) -> Case:
    kwargs = {"window_size": ws, "alpha": 0.9}
    return Case("hilo", label, "hilo", dim, heads, (side, side), batch, kwargs)


CASES: dict[str, list[Case]] = {
    "swin": [  # Swin-T, window 7
        _swin("Swin-T stage 1 SW-MSA", 96, 3, 56, True),
        _swin("Swin-T stage 1 W-MSA", 96, 3, 56, False),
        _swin("Swin-T stage 2 SW-MSA", 192, 6, 28, True),
        _swin("Swin-T stage 3 SW-MSA", 384, 12, 14, True),
        _swin("Swin-T stage 4 W-MSA", 768, 24, 7, False),
    ],
    "pvt": [  # PVTv2-b1
        _pvt("PVTv2-b1 stage 1", 64, 1, 56, 8),
        _pvt("PVTv2-b1 stage 2", 128, 2, 28, 4),
        _pvt("PVTv2-b1 stage 3", 320, 5, 14, 2),
        _pvt("PVTv2-b1 stage 4", 512, 8, 7, 1),
    ],
    "hilo": [  # LITv2, alpha 0.9
        _hilo("LITv2-S stage 3", 256, 8, 14, 2),
        _hilo("LITv2-S stage 4", 512, 16, 7, 1),
        _hilo("LITv2-B stage 3, batch 64", 768, 12, 14, 2, batch=64),
    ],
}


def timm_fused_variants(cases: Iterable[Case], mode: str) -> list[Case]:
    """Cases with timm's attention path set: "default" (timm's own default per model), "on"
    (SDPA), "off" (matmul/softmax) or "both" (each timm case twice). Non-timm cases as given."""
    choices = {"default": [None], "on": [True], "off": [False], "both": [False, True]}
    if mode not in choices:
        raise ValueError(f"timm fused mode {mode!r} is not one of {sorted(choices)}")
    out = []
    for case in cases:
        if case.group not in ("swin", "pvt"):
            out.append(case)
            continue
        for fused in choices[mode]:
            extra = {} if fused is None else {"fused": fused}
            out.append(replace(case, baseline_kwargs={**case.baseline_kwargs, **extra}))
    return out


@dataclass(frozen=True)
class Stats:
    """Milliseconds per call of the timed runs."""

    median: float
    min: float
    max: float

    @classmethod
    def of(cls, seconds: Sequence[float]) -> Stats:
        ms = [1000 * s for s in seconds]
        return cls(statistics.median(ms), min(ms), max(ms))

    def text(self) -> str:
        return f"{self.median:.2f} ({self.min:.2f}–{self.max:.2f})"


@dataclass(frozen=True)
class Comparison:
    """A case's result: timings of the baseline and of lightattn in both layouts (same
    weights, same input), and how far the outputs are apart."""

    case: Case
    baseline: str
    runs: int
    baseline_ms: Stats
    tokens_ms: Stats
    map_ms: Stats
    max_abs_diff: float
    max_rel_diff: float  # max |difference| / max |baseline output|

    @property
    def ratio_tokens(self) -> float:
        """Baseline median / lightattn (B, N, C) median: > 1 means lightattn is faster."""
        return self.baseline_ms.median / self.tokens_ms.median

    @property
    def ratio_map(self) -> float:
        """Baseline median / lightattn (B, C, H, W) median."""
        return self.baseline_ms.median / self.map_ms.median

    @property
    def ratio_tokens_min(self) -> float:
        """Baseline min / lightattn (B, N, C) min: steadier than the medians on a busy CPU."""
        return self.baseline_ms.min / self.tokens_ms.min


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run with `threads` torch threads (unchanged when None), restored afterwards."""
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def build_pair(case: Case, seed: int = 0) -> tuple[nn.Module, nn.Module]:
    """(lightattn module, its baseline with the same weights), both in eval mode."""
    torch.manual_seed(seed)
    m = lightattn.create_attention(case.mechanism, case.dim, case.num_heads, **case.kwargs)
    return m.eval(), baseline_for(m, **case.baseline_kwargs).eval()


def output_difference(base: Tensor, tokens: Tensor, as_map: Tensor) -> tuple[float, float]:
    """(max abs, max abs / max |base|) between the baseline's (B, N, C) output and lightattn's
    outputs in both layouts ((B, N, C) and (B, C, H, W))."""
    b, n, c = base.shape
    map_tokens = as_map.reshape(b, c, n).transpose(1, 2)
    diff = max((base - tokens).abs().max().item(), (base - map_tokens).abs().max().item())
    return diff, diff / max(base.abs().max().item(), 1e-30)


def time_interleaved(
    fns: Sequence[Callable[[], object]],
    *,
    runs: int,
    min_time: float,
    warmup: int,
    max_runs: int,
    timer: Callable[[], float],
) -> list[list[float]]:
    """Seconds per call of each fn, called in turn (A, B, C, C, B, A, ...: the order reverses
    every round so that none always follows the same one), after `warmup` untimed rounds.
    Rounds go on until `runs` rounds and `min_time` seconds in all, or `max_runs` rounds."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    times: list[list[float]] = [[] for _ in fns]
    total = 0.0
    while len(times[0]) < max_runs and (len(times[0]) < runs or total < min_time):
        order = range(len(fns)) if len(times[0]) % 2 == 0 else reversed(range(len(fns)))
        for i in order:
            start = timer()
            fns[i]()
            times[i].append(timer() - start)
            total += times[i][-1]
    return times


def compare_case(
    case: Case,
    *,
    runs: int = 7,
    min_time: float = 1.0,
    warmup: int = 2,
    max_runs: int = 1000,
    timer: Callable[[], float] = time.perf_counter,
) -> Comparison:
    """Time one case: baseline on (B, N, C), lightattn on (B, N, C) + hw and on (B, C, H, W)."""
    m, base = build_pair(case)
    (h, w), b = case.hw, case.batch
    x = torch.randn(b, h * w, case.dim, generator=torch.Generator().manual_seed(1))
    x_map = x.transpose(1, 2).reshape(b, case.dim, h, w).contiguous()
    fns = [lambda: base(x, (h, w)), lambda: m(x, hw=(h, w)), lambda: m(x_map)]
    with torch.inference_mode():
        diff, rel = output_difference(*(fn() for fn in fns))
        times = time_interleaved(
            fns, runs=runs, min_time=min_time, warmup=warmup, max_runs=max_runs, timer=timer
        )
    stats = [Stats.of(t) for t in times]
    return Comparison(case, base.describe(), len(times[0]), *stats, diff, rel)


def compare(
    cases: Iterable[Case],
    threads: int | None = None,
    runs: int = 7,
    min_time: float = 1.0,
    *,
    warmup: int = 2,
    max_runs: int = 1000,
    timer: Callable[[], float] = time.perf_counter,
    progress: Callable[[Comparison], None] | None = None,
) -> list[Comparison]:
    """Time every case in this process (see `compare_case`), eval and inference_mode, with
    `threads` torch threads (unchanged when None). `progress` is called after each case."""
    out = []
    with torch_threads(threads):
        for case in cases:
            out.append(compare_case(
                case, runs=runs, min_time=min_time, warmup=warmup, max_runs=max_runs,
                timer=timer,
            ))  # fmt: skip
            if progress is not None:
                progress(out[-1])
    return out


# --------------------------------------------------------------------------------------------
# Report and command line

TABLE_HEADER = (
    "| case | B | C | H×W | heads | lightattn settings | baseline | baseline ms "
    "| lightattn (B,N,C) ms | × | × min | lightattn (B,C,H,W) ms | × | max abs diff "
    "| max rel diff "
    "| runs |"
)


def table_row(r: Comparison) -> str:
    c = r.case
    cells = [
        c.label, str(c.batch), str(c.dim), f"{c.hw[0]}×{c.hw[1]}", str(c.num_heads),
        f"{c.mechanism}: {c.settings()}", r.baseline, r.baseline_ms.text(), r.tokens_ms.text(),
        f"{r.ratio_tokens:.2f}", f"{r.ratio_tokens_min:.2f}", r.map_ms.text(),
        f"{r.ratio_map:.2f}",
        f"{r.max_abs_diff:.1e}", f"{r.max_rel_diff:.1e}", str(r.runs),
    ]  # fmt: skip
    return "| " + " | ".join(cells) + " |"


def markdown(results: Sequence[Comparison], threads: int | None = None) -> str:
    """The comparison as a markdown table with a line on the machine and the method."""
    now = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    lines = [
        f"Baselines vs lightattn {lightattn.__version__}, torch {torch.__version__}, "
        f"{cpu_model()}, {usable_cores()} cores, {threads or torch.get_num_threads()} "
        f"torch threads, fp32, eval + inference_mode, {now}.",
        "",
        "ms: median (min–max) per call, baseline and lightattn interleaved in one process "
        "with the same weights and input. ×: baseline median / lightattn median "
        "(> 1: lightattn faster); × min: ratio of the fastest calls. Diffs: lightattn output "
        f"(both layouts) vs baseline output. Load average now: {load_average()}.",
        "",
        TABLE_HEADER,
        "|" + "---|" * TABLE_HEADER.count(" |"),
    ]
    return "\n".join(lines + [table_row(r) for r in results]) + "\n"


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, or "unknown" where the OS has none."""
    if not hasattr(os, "getloadavg"):
        return "unknown"
    return ", ".join(f"{v:.2f}" for v in os.getloadavg())


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m lightattn.bench.baselines",
        description="Time lightattn against plain re-implementations of timm's Swin and "
        "PVTv2 attention and LITv2's official HiLo, in one process, same weights and input.",
    )
    p.add_argument("--cases", nargs="+", choices=sorted(CASES), default=list(CASES))
    p.add_argument("--runs", type=int, default=7, help="minimum timed calls of each (7)")
    p.add_argument("--min-time", type=float, default=1.0, help="minimum seconds a case (1.0)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (unchanged)")
    p.add_argument(
        "--timm-fused", choices=["default", "on", "off", "both"], default="default",
        help="timm's attention path: its default per model (Swin matmul/softmax, PVTv2 SDPA), "
        "SDPA, matmul/softmax, or both",
    )  # fmt: skip
    p.add_argument("--out", type=Path, default=None, help="also write the table to this file")
    args = p.parse_args(argv)
    if args.runs < 1 or args.min_time < 0 or (args.threads is not None and args.threads < 1):
        p.error("--runs and --threads must be >= 1, --min-time >= 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    cases = timm_fused_variants([c for g in args.cases for c in CASES[g]], args.timm_fused)

    def progress(r: Comparison) -> None:
        print(f"{r.case.label} [{r.baseline}]: ×{r.ratio_tokens:.2f}", file=sys.stderr)

    results = compare(cases, args.threads, args.runs, args.min_time, progress=progress)
    text = markdown(results, args.threads)
    print(text)
    if args.out is not None:
        args.out.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
