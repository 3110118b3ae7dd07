"""ACmix: local self-attention and a shift-rewritten convolution sharing one projection."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import _padding
from ._attend import attend, softmax
from ._base import AttentionBase, as_map, as_tokens
from ._blocks import block_layout, from_blocks, to_blocks
from ._checks import check_choice, check_positive_int
from ._layout import linear_in, linear_out
from ._padding import mod, round_up, tracing
from ._registry import register_attention


def grid_coords(hh: int, ww: int, like: Tensor) -> Tensor:
    """(hh * ww, 2) row-major (y, x) pixel coordinates in like's dtype and device."""
    ys = torch.arange(hh, dtype=like.dtype, device=like.device)
    xs = torch.arange(ww, dtype=like.dtype, device=like.device)
    return torch.stack(torch.meshgrid(ys, xs, indexing="ij"), dim=-1).reshape(-1, 2)


def shift_kernels(channels: int, kernel_size: int) -> Tensor:
    """(channels, k², k, k) one-hot kernels: input i of each group is shifted by kernel
    position (i // k, i % k), so the grouped conv sums k² zero-filled shifts."""
    weight = torch.zeros(channels, kernel_size**2, kernel_size, kernel_size)
    for i in range(kernel_size**2):
        weight[:, i, i // kernel_size, i % kernel_size] = 1.0
    return weight


def tiles(h: int, w: int, kernel_att: int) -> tuple[int, int, int, int, int, int]:
    """Tile (th, tw), padded map (hp, wp) and halo (rh, rw) of the sliding fast path.

    Eager: tiles shrink to a map smaller than kernel_att and a side one tile covers has no
    halo. While tracing, sizes are symbolic, so tiles are always kernel_att with a halo: the
    extra keys are masked, the result is the same."""
    r = kernel_att // 2
    if tracing():
        hp, wp = round_up(h, kernel_att), round_up(w, kernel_att)
        return kernel_att, kernel_att, hp, wp, r, r
    th, tw = min(kernel_att, h), min(kernel_att, w)
    hp, wp = round_up(h, th), round_up(w, tw)
    return th, tw, hp, wp, (r if hp > th else 0), (r if wp > tw else 0)


def halo(h: int, w: int, kernel_att: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """`build_halo` of the shape, cached per shape in eager mode."""
    if tracing():
        return build_halo(h, w, kernel_att, device)
    return _cached_halo(h, w, kernel_att, torch.device(device))


@lru_cache(maxsize=64)
def _cached_halo(h: int, w: int, kernel_att: int, device: torch.device) -> tuple[Tensor, Tensor]:
    with torch.inference_mode(False):  # cached tensors must serve autograd calls later
        return build_halo(h, w, kernel_att, device)


def build_halo(h, w, kernel_att: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """The halo tiles of the sliding fast path, from index arithmetic on the (possibly
    symbolic) sizes: `order` (nTiles * Lk,), the row-major token of each halo position (N
    outside the map: the gather appends one fill row), and `mask` (nTiles, Lq, Lk) bool,
    True where a query of the tile may attend a key of its halo."""
    th, tw, hp, wp, rh, rw = tiles(h, w, kernel_att)
    kh, kw, r = th + 2 * rh, tw + 2 * rw, kernel_att // 2
    tile, pos = (
        torch.arange(hp // th * (wp // tw), device=device),
        torch.arange(kh * kw, device=device),
    )
    tile_y, tile_x = tile // (wp // tw), mod(tile, wp // tw)
    y = (tile_y * th - rh)[:, None] + (pos // kw)[None]
    x = (tile_x * tw - rw)[:, None] + mod(pos, kw)[None]
    key_ok = (y >= 0) & (y < h) & (x >= 0) & (x < w)  # (nTiles, Lk)
    order = torch.where(key_ok, y * w + x, h * w).flatten()
    query_ok = (tile_y[:, None] * th + torch.arange(th, device=device)[None] < h)[:, :, None] & (
        tile_x[:, None] * tw + torch.arange(tw, device=device)[None] < w
    )[:, None, :]
    query_ok = query_ok.flatten(1)  # (nTiles, Lq)

    def near(t: int, k: int, halo: int) -> Tensor:
        keys, queries = torch.arange(k, device=device), torch.arange(t, device=device)
        return (keys[None] - halo - queries[:, None]).abs() <= r

    close = near(th, kh, rh)[:, None, :, None] & near(tw, kw, rw)[None, :, None, :]
    close = close.reshape(th * tw, kh * kw)
    # padded queries (cropped later) attend the tile's real keys: no empty rows (logic ops,
    # not a boolean `where`, which onnxruntime lacks)
    return order, key_ok[:, None, :] & (close | ~query_ok[:, :, None])


def _neighbours(side: int, radius: int) -> int:
    """Sum over the positions of a side of the in-range positions within `radius`."""
    return sum(min(side - 1, i + radius) - max(0, i - radius) + 1 for i in range(side))


@register_attention("acmix")
class ACmix(AttentionBase):
    """ACmix, Pan et al., "On the Integration of Self-Attention and Convolution", CVPR 2022.

    (B, C, H, W) -> (B, C, H, W), or (B, N, C) with hw -> (B, N, C).
    Shared stage: q, k, v = 1x1 projections (C channels each, h heads of width d).
    Attention path, `att="sliding"` (ResNet variant): every pixel attends the pixels of the
    kernel_att x kernel_att window centred on it; keys outside the map are masked (never
    padded values). Position term as in the paper, a learned 1x1 conv (`pos`, 2 -> d, no
    bias: it would cancel) of coordinates: logit_ij = d^-½ · q_i · (k_j + pos((c_j - c_i) / R))
    with c pixel coordinates and R = max(1, kernel_att // 2), i.e. in units of the window
    radius (the paper uses map-normalised coordinates, which ties the term to H, W).
    `att="window"` (Swin variant): non-overlapping kernel_att windows, padded + masked,
    same position term. Convolution path: fc mixes the 3h head maps into kernel_conv² maps
    per head channel; `dep_conv`, a k_conv x k_conv conv grouped by head channel
    (zero padding kernel_conv // 2), starts as shift kernels and is learnable.
    out = proj(rate_att · attention + rate_conv · conv), rates learnable, both 0.5 at init.
    The output Linear `proj` is not in the ResNet module; it is here as in every lightattn
    mechanism (the Swin variant has it).

    Fast sliding path: the map is cut into kernel_att tiles; each tile's queries attend its
    halo (tile + kernel_att // 2 on each side; no halo along a side the single tile covers)
    with SDPA and a neighbourhood mask, so k and v are copied about (2 - 1/k_att)² times
    rather than k_att² times (published unfold). The reference path is the plain
    unfold of k_att² neighbours. MACs = 4NC² + 3NC·kc² + NC·kc⁴ + attention, where
    attention is 2·Np·Lhalo·C (sliding fast path, Np padded tokens) or 2·Np·L·C (window).
    """

    fuses_layout = True

    def __init__(
        self,
        dim: int,
        num_heads: int | None = None,
        kernel_att: int = 7,
        kernel_conv: int = 3,
        att: str = "sliding",
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        reference: bool = False,
    ) -> None:
        super().__init__(dim, num_heads, attn_drop, proj_drop, reference)
        self.kernel_att = check_positive_int("kernel_att", kernel_att)
        self.kernel_conv = check_positive_int("kernel_conv", kernel_conv)
        self.att = check_choice("att", att, ("sliding", "window"))
        if att == "sliding" and kernel_att % 2 == 0:
            raise ValueError(f"kernel_att={kernel_att} must be odd for att='sliding'")
        if kernel_conv % 2 == 0:
            raise ValueError(f"kernel_conv={kernel_conv} must be odd (a centred kernel)")
        self.pos_unit = float(max(1, kernel_att // 2))
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.pos = nn.Linear(2, self.head_dim, bias=False)
        self.fc = nn.Linear(3 * self.num_heads, kernel_conv**2, bias=False)
        self.dep_conv = nn.Conv2d(
            self.head_dim * kernel_conv**2,
            dim,
            kernel_conv,
            padding=kernel_conv // 2,
            groups=self.head_dim,
        )
        self.rate_att = nn.Parameter(torch.tensor(0.5))
        self.rate_conv = nn.Parameter(torch.tensor(0.5))
        self.proj = nn.Linear(dim, dim)
        self.reset_shift_kernels()

    def reset_shift_kernels(self) -> None:
        with torch.no_grad():
            self.dep_conv.weight.copy_(shift_kernels(self.dim, self.kernel_conv))
            self.dep_conv.bias.zero_()

    def settings(self) -> dict[str, Any]:
        return {"kernel_att": self.kernel_att, "kernel_conv": self.kernel_conv, "att": self.att}

    # -- geometry -------------------------------------------------------------------------

    def _window_size(self, h: int, w: int) -> tuple[int, int]:
        """Window of the `att="window"` mode: kernel_att, shrunk to a smaller map in eager
        mode (while tracing, a padded, masked full window gives the same result)."""
        if tracing():
            return self.kernel_att, self.kernel_att
        return min(self.kernel_att, h), min(self.kernel_att, w)

    def _tiles(self, h: int, w: int) -> tuple[int, int, int, int, int, int]:
        return tiles(h, w, self.kernel_att)

    # -- attention paths ------------------------------------------------------------------

    def _sliding_fast(self, qkv: Tensor, h: int, w: int) -> Tensor:
        b, c = qkv.shape[0], self.dim
        heads, d = self.num_heads, self.head_dim
        th, tw, hp, wp, rh, rw = self._tiles(h, w)
        kh, kw = th + 2 * rh, tw + 2 * rw
        layout = block_layout(h, w, (th, tw), device=qkv.device)
        q = to_blocks(qkv[..., :c], layout).view(-1, th * tw, heads, d).transpose(1, 2)
        order, mask = halo(h, w, self.kernel_att, qkv.device)
        kv = F.pad(qkv[..., c:], (0, 0, 0, 1), value=_padding.PAD_FILL).index_select(1, order)
        k, v = kv.view(-1, kh * kw, 2, heads, d).permute(2, 0, 3, 1, 4)  # (B*nT, heads, Lk, d)
        # q·pos(c_j - c_i) = q·pos(c_j) - q·pos(c_i): the second term is constant per query
        # and cancels in the softmax, so the position term is a key offset.
        k = k + self.pos(grid_coords(kh, kw, qkv) / self.pos_unit)
        mask = mask[:, None].repeat(b, 1, 1, 1)  # (B * nTiles, 1, Lq, Lk)
        out = attend(
            q, k, v, scale=self.scale, mask=mask, dropout_p=self.attn_dropout_p, reference=False
        )
        return from_blocks(self.merge_heads(out), layout)

    def _sliding_reference(self, qkv: Tensor, h: int, w: int) -> Tensor:
        b, c = qkv.shape[0], self.dim
        heads, d, ka, r = self.num_heads, self.head_dim, self.kernel_att, self.kernel_att // 2
        q, k, v = (as_map(t, h, w) for t in qkv.split(c, dim=-1))

        def neighbours(t: Tensor) -> Tensor:  # (B, C, H, W) -> (B, heads, d, ka², N)
            padded = F.pad(t, (r, r, r, r), value=_padding.PAD_FILL)
            return F.unfold(padded, ka).view(t.shape[0], heads, -1, ka * ka, h * w)

        ones = torch.ones(1, 1, h, w, device=qkv.device)
        inside = F.unfold(F.pad(ones, (r, r, r, r)), ka).view(1, 1, ka * ka, h * w) > 0.5
        offsets = grid_coords(ka, ka, qkv) - r  # (ka², 2) = c_j - c_i
        rel = self.pos(offsets / self.pos_unit)  # (ka², d)
        q = q.reshape(b, heads, d, h * w)
        logits = torch.einsum("bhdn,bhdon->bhon", q, neighbours(k))
        logits = (logits + torch.einsum("bhdn,od->bhon", q, rel)) * self.scale
        logits = logits.masked_fill(~inside, float("-inf"))
        weights = softmax(logits, dim=2)
        if self.attn_dropout_p > 0:
            weights = F.dropout(weights, p=self.attn_dropout_p)
        out = torch.einsum("bhon,bhdon->bhdn", weights, neighbours(v))
        return out.reshape(b, c, h * w).transpose(1, 2)

    def _window(self, qkv: Tensor, h: int, w: int) -> Tensor:
        b = qkv.shape[0]
        heads, d = self.num_heads, self.head_dim
        wh, ww = self._window_size(h, w)
        layout = block_layout(h, w, (wh, ww), device=qkv.device)
        windows = to_blocks(qkv, layout)  # (B * nWin, L, 3C)
        q, k, v = windows.view(-1, wh * ww, 3, heads, d).permute(2, 0, 3, 1, 4)
        coords = grid_coords(wh, ww, qkv) / self.pos_unit
        mask = None if layout.identity else layout.mask().repeat(b, 1, 1, 1)
        if self.reference:
            rel = self.pos(coords[None, :, :] - coords[:, None, :])  # (L, L, d): c_j - c_i
            bias = torch.einsum("bhid,ijd->bhij", q, rel) * self.scale
            out = attend(
                q, k, v, scale=self.scale, mask=mask, bias=bias,
                dropout_p=self.attn_dropout_p, reference=True,
            )  # fmt: skip
        else:
            out = attend(
                q, k + self.pos(coords), v, scale=self.scale, mask=mask,
                dropout_p=self.attn_dropout_p, reference=False,
            )  # fmt: skip
        return from_blocks(self.merge_heads(out), layout)

    # -- convolution path -----------------------------------------------------------------

    def _conv(self, qkv: Tensor, h: int, w: int) -> Tensor:
        b, n, _ = qkv.shape
        heads, d, kc = self.num_heads, self.head_dim, self.kernel_conv
        per_channel = qkv.view(b, n, 3, heads, d).permute(0, 1, 4, 2, 3).reshape(b, n, d, 3 * heads)
        shifted_inputs = self.fc(per_channel).reshape(b, n, d * kc * kc)  # channel = g*kc² + i
        return as_tokens(self.dep_conv(as_map(shifted_inputs, h, w)))

    def forward_tokens(self, x: Tensor, h: int, w: int) -> Tensor:
        qkv = linear_in(self.qkv, x)
        if self.att == "window":
            attn = self._window(qkv, h, w)
        elif self.reference:
            attn = self._sliding_reference(qkv, h, w)
        else:
            attn = self._sliding_fast(qkv, h, w)
        out = self.rate_att * attn + self.rate_conv * self._conv(qkv, h, w)
        return self.proj_drop(linear_out(self.proj, out, x))

    def macs(self, h: int, w: int) -> int:
        n, c, d, kc = h * w, self.dim, self.head_dim, self.kernel_conv
        total = 4 * n * c * c + 3 * n * c * kc * kc + n * c * kc**4
        if self.att == "window":
            wh, ww = min(self.kernel_att, h), min(self.kernel_att, w)
            keys, padded = wh * ww, round_up(h, wh) * round_up(w, ww)
        elif self.reference:  # unfold of k_att² neighbours; the position term per neighbour
            keys = self.kernel_att**2
            return total + 3 * n * keys * c + 2 * keys * d
        else:
            th, tw, hp, wp, rh, rw = self._tiles(h, w)
            keys, padded = (th + 2 * rh) * (tw + 2 * rw), hp * wp
        return total + 2 * padded * keys * c + 2 * keys * d

    def useful_macs(self, h: int, w: int) -> int:
        """Only the in-map keys each real query may see: its k_att x k_att neighbourhood
        (sliding) or the real pixels of its window; halo tiles and padding left out."""
        c = self.dim
        if self.att == "window":
            wh, ww = min(self.kernel_att, h), min(self.kernel_att, w)
            keys, padded = wh * ww, round_up(h, wh) * round_up(w, ww)
            pairs = block_layout(h, w, (wh, ww)).attended_pairs()
            return self.macs(h, w) - 2 * (padded * keys - pairs) * c
        th, tw, hp, wp, rh, rw = self._tiles(h, w)
        computed = 2 * hp * wp * (th + 2 * rh) * (tw + 2 * rw) * c
        r = self.kernel_att // 2
        return self.macs(h, w) - computed + 2 * _neighbours(h, r) * _neighbours(w, r) * c
