"""Softmax attention inside blocks of a map: Swin windows (optionally cyclically shifted) or
MaxViT grid groups. Shared by `window`, `grid`, HiLo's Hi-Fi branch and ACmix's window mode.

A `BlockLayout` describes, for one map shape, where every token goes: the map is padded at
the bottom and right to a multiple of the block, optionally rolled by -shift (Swin), and cut
into blocks. Moving tokens into block order and back is one gather each way (pad, roll and
partition at once); on a divisible, unshifted map it is a plain permute. The layout's mask
hides padded keys and, with a shift, keys of other Swin regions.

Layouts depend only on the shape, so eager calls take them from a cache. While exporting or
compiling, everything is computed from the (possibly symbolic) sizes with tensor arithmetic:
no Python branch depends on H or W.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor

from . import _padding
from ._attend import attend, attend_small
from ._padding import mod, round_up, tracing

SMALL_BLOCK = 49  # blocks of up to this many keys use attend_small (faster than SDPA on CPU)


@dataclass(frozen=True, eq=False)
class BlockLayout:
    """Token placement for blocks of one map shape (all index tensors on one device).

    `order` (Np,): for each block-ordered position, the row-major source token, or N for a
    padded position (the gather appends one fill row). `inverse` (N,): the block-ordered
    position of each source token. `key_valid` (nB, L): False on padded positions.
    `region` (nB, L) Swin region labels, or None without a shift. `identity`: the layout is
    a plain partition of a divisible, unshifted map (no gather, no mask needed). `padded`:
    some positions are padding (always True while tracing). `masks`: the additive masks
    made so far, per dtype.
    """

    h: int
    w: int
    block: tuple[int, int]
    n_blocks: int
    order: Tensor
    inverse: Tensor
    key_valid: Tensor
    region: Tensor | None
    identity: bool
    padded: bool
    dilated: bool
    masks: dict = field(default_factory=dict, repr=False)

    @property
    def length(self) -> int:
        return self.block[0] * self.block[1]

    def attended_pairs(self) -> int:
        """Number of (real query, real key it may attend) pairs: the useful logits."""
        allowed = self.mask()[:, 0] & self.key_valid[:, :, None] & self.key_valid[:, None, :]
        return int(allowed.sum())

    def mask(self) -> Tensor:
        """(nB, 1, L, L) bool: True where a query may attend a key; a query always sees itself."""
        allowed = self.key_valid[:, None, :].expand(-1, self.length, -1)
        if self.region is not None:
            allowed = allowed & (self.region[:, :, None] == self.region[:, None, :])
        eye = torch.eye(self.length, dtype=torch.bool, device=self.key_valid.device)
        return (allowed | eye)[:, None]


def _block_coords(r: Tensor, c: Tensor, block: tuple, grid: tuple, dilated: bool) -> Tensor:
    """Block-ordered position of pixel (r, c) of the padded, rolled map."""
    (bh, bw), (nbh, nbw) = block, grid
    if dilated:
        bi, ti, bj, tj = mod(r, nbh), r // nbh, mod(c, nbw), c // nbw
    else:
        bi, ti, bj, tj = r // bh, mod(r, bh), c // bw, mod(c, bw)
    return (bi * nbw + bj) * (bh * bw) + ti * bw + tj


def _pixel_coords(pos: Tensor, block: tuple, grid: tuple, dilated: bool) -> tuple[Tensor, Tensor]:
    """Row and column in the padded, rolled map of block-ordered position `pos`."""
    (bh, bw), (nbh, nbw) = block, grid
    blk, t = pos // (bh * bw), mod(pos, bh * bw)
    bi, bj, ti, tj = blk // nbw, mod(blk, nbw), t // bw, mod(t, bw)
    if dilated:
        return ti * nbh + bi, tj * nbw + bj
    return bi * bh + ti, bj * bw + tj


def build_layout(
    h, w, block: tuple, *, dilated: bool = False, shift: tuple | None = None, device=None
) -> BlockLayout:
    """The layout of an H x W map cut into `block` (bh, bw) blocks (see `BlockLayout`).

    Pure index arithmetic on the sizes, so it also runs on symbolic sizes while exporting.
    """
    bh, bw = block
    sh, sw = (0, 0) if shift is None else shift
    hp, wp = round_up(h, bh), round_up(w, bw)
    grid = (hp // bh, wp // bw)
    r, c = _pixel_coords(torch.arange(hp * wp, device=device), block, grid, dilated)
    src_r, src_c = mod(r + sh, hp), mod(c + sw, wp)
    valid = (src_r < h) & (src_c < w)
    order = torch.where(valid, src_r * w + src_c, h * w)
    pix = torch.arange(h * w, device=device)
    row, col = pix // w + hp - sh, mod(pix, w) + wp - sw  # shifted, kept >= 0
    inverse = _block_coords(mod(row, hp), mod(col, wp), block, grid, dilated)
    region = None
    if shift is not None:
        rows = (r >= hp - bh).long() + (r >= hp - sh).long()
        region = (rows * 3 + (c >= wp - bw).long() + (c >= wp - sw).long()).view(-1, bh * bw)
    return BlockLayout(
        h=h, w=w, block=(bh, bw), n_blocks=grid[0] * grid[1], order=order, inverse=inverse,
        key_valid=valid.view(-1, bh * bw), region=region,
        identity=_is_identity(h, w, block, shift), padded=tracing() or hp * wp != h * w,
        dilated=dilated,
    )  # fmt: skip


def _is_identity(h, w, block: tuple, shift: tuple | None) -> bool:
    """A plain partition suffices (decided only in eager mode; traced code always gathers)."""
    if tracing():
        return False
    return h % block[0] == 0 and w % block[1] == 0 and (shift is None or tuple(shift) == (0, 0))


@lru_cache(maxsize=128)
def _cached_layout(
    h: int, w: int, block: tuple, dilated: bool, shift: tuple | None, device
) -> BlockLayout:
    with torch.inference_mode(False):  # cached tensors must serve autograd calls later
        return build_layout(h, w, block, dilated=dilated, shift=shift, device=device)


def block_layout(
    h, w, block: tuple, *, dilated: bool = False, shift: tuple | None = None, device=None
) -> BlockLayout:
    """`build_layout`, cached per shape and device in eager mode."""
    if tracing():
        return build_layout(h, w, block, dilated=dilated, shift=shift, device=device)
    device = torch.device("cpu") if device is None else torch.device(device)
    if shift is not None:
        shift = (int(shift[0]), int(shift[1]))
        shift = None if shift == (0, 0) else shift
    return _cached_layout(int(h), int(w), (int(block[0]), int(block[1])), dilated, shift, device)


def _additive(mask: Tensor, dtype: torch.dtype) -> Tensor:
    zero = torch.zeros((), dtype=dtype, device=mask.device)
    return torch.where(mask, zero, torch.tensor(float("-inf"), dtype=dtype, device=mask.device))


def additive_mask(layout: BlockLayout, dtype: torch.dtype) -> Tensor | None:
    """(nB, 1, L, L) 0 / -inf mask of `layout` in `dtype`, or None when nothing is masked."""
    if layout.identity:
        return None
    if tracing():
        return _additive(layout.mask(), dtype)
    if dtype not in layout.masks:
        with torch.inference_mode(False):
            layout.masks[dtype] = _additive(layout.mask(), dtype)
    return layout.masks[dtype]


def to_blocks(x: Tensor, layout: BlockLayout, fill: float | None = None) -> Tensor:
    """(B, N, C) row-major tokens -> (B * nB, L, C) tokens in block order; padded positions
    hold `fill` (default `_padding.PAD_FILL`)."""
    b, n, c = x.shape
    bh, bw = layout.block
    if layout.identity:
        hp, wp = layout.h, layout.w
        if layout.dilated:
            blocks = x.reshape(b, bh, hp // bh, bw, wp // bw, c).permute(0, 2, 4, 1, 3, 5)
        else:
            blocks = x.reshape(b, hp // bh, bh, wp // bw, bw, c).permute(0, 1, 3, 2, 4, 5)
        return blocks.reshape(b * layout.n_blocks, bh * bw, c)
    filled = F.pad(x, (0, 0, 0, 1), value=_padding.PAD_FILL if fill is None else fill)
    return filled.index_select(1, layout.order).view(b * layout.n_blocks, bh * bw, c)


def from_blocks(y: Tensor, layout: BlockLayout) -> Tensor:
    """Inverse of `to_blocks`: (B * nB, L, C) -> (B, N, C), padded positions dropped."""
    c = y.shape[-1]
    bh, bw = layout.block
    b = y.shape[0] // layout.n_blocks
    if layout.identity:
        hp, wp = layout.h, layout.w
        if layout.dilated:
            grid = y.view(b, hp // bh, wp // bw, bh, bw, c).permute(0, 3, 1, 4, 2, 5)
        else:
            grid = y.view(b, hp // bh, wp // bw, bh, bw, c).permute(0, 1, 3, 2, 4, 5)
        return grid.reshape(b, hp * wp, c)
    return y.reshape(b, -1, c).index_select(1, layout.inverse)


def block_attention(
    qkv: Tensor,
    layout: BlockLayout,
    num_heads: int,
    *,
    scale: float,
    bias: Tensor | None = None,
    key_valid: Tensor | None = None,
    dropout_p: float = 0.0,
    reference: bool = False,
) -> Tensor:
    """(B * nB, L, 3·heads·d) packed q|k|v in block order -> (B * nB, L, heads·d).

    Softmax attention inside each block, keys masked by the layout; `bias` (heads, L, L)
    is added to the logits (e.g. Swin's relative position bias). `key_valid` (B, N) bool,
    a per-sample key padding mask, hides more keys (a query always sees itself).
    """
    blocks, length, _ = qkv.shape
    q, k, v = qkv.view(blocks, length, 3, num_heads, -1).permute(2, 0, 3, 1, 4)
    if key_valid is None:
        mask, repeat = additive_mask(layout, q.dtype), blocks // layout.n_blocks
    else:
        mask, repeat = _additive(_sample_mask(layout, key_valid), q.dtype), 1
    if length <= SMALL_BLOCK and not reference:
        # eager: the per-block offset is periodic over the samples, added without a repeat
        extra = _logit_offset(mask, bias, repeat if tracing() else 1)
        out = attend_small(q, k, v, scale=scale, bias=extra, dropout_p=dropout_p)
    else:
        extra = _logit_offset(mask, bias, repeat)
        out = attend(q, k, v, scale=scale, bias=extra, dropout_p=dropout_p, reference=reference)
    return out.transpose(1, 2).reshape(blocks, length, -1)


def _sample_mask(layout: BlockLayout, key_valid: Tensor) -> Tensor:
    """(B * nB, 1, L, L) bool: the layout's mask and a per-sample (B, N) key validity."""
    in_blocks = to_blocks(key_valid[..., None].to(torch.uint8), layout, fill=0)[..., 0].bool()
    eye = torch.eye(layout.length, dtype=torch.bool, device=key_valid.device)
    shared = layout.mask().repeat(key_valid.shape[0], 1, 1, 1)
    return (shared & in_blocks[:, None, None, :]) | eye


def _logit_offset(mask: Tensor | None, bias: Tensor | None, repeat: int) -> Tensor | None:
    """Bias (heads, L, L) and additive mask (M, 1, L, L) as one term broadcastable to the
    (B * nB, heads, L, L) logits: (1, heads, L, L) without a mask, else the sum repeated
    `repeat` times along the first dim (B times for a mask shared by the samples)."""
    if mask is None:
        return None if bias is None else bias[None]
    both = mask if bias is None else mask + bias.to(mask.dtype)
    return both.repeat(repeat, 1, 1, 1)
