"""Softmax attention inside blocks of a map: Swin windows or MaxViT grid groups.

Shared by `window`, `grid` and HiLo's Hi-Fi branch. The map is padded to a multiple of the
block and the padded keys are masked; an optional cyclic shift uses the Swin region mask.
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import _padding
from ._attend import attend, block_mask
from ._padding import (
    grid_partition,
    grid_reverse,
    round_up,
    valid_map,
    window_partition,
    window_reverse,
)


def shift_region_ids(hp: int, wp: int, wh: int, ww: int, sh: int, sw: int, device) -> Tensor:
    """(1, Hp, Wp, 1) labels of the Swin regions of a cyclically shifted map."""
    ids = torch.zeros(1, hp, wp, 1, device=device)
    label = 0
    for hs in (slice(0, hp - wh), slice(hp - wh, hp - sh), slice(hp - sh, hp)):
        for ws in (slice(0, wp - ww), slice(wp - ww, wp - sw), slice(wp - sw, wp)):
            ids[:, hs, ws] = label
            label += 1
    return ids


def block_key_mask(
    h: int, w: int, block: tuple[int, int], dilated: bool, shift: tuple[int, int], device
) -> Tensor | None:
    """(nBlocks, 1, L, L) mask of padded keys and shift regions, or None when nothing is masked."""
    bh, bw = block
    hp, wp = round_up(h, bh), round_up(w, bw)
    if (hp, wp) == (h, w) and shift == (0, 0):
        return None
    partition = grid_partition if dilated else window_partition
    valid = torch.roll(valid_map(h, w, hp, wp, device), (-shift[0], -shift[1]), dims=(1, 2))
    mask = block_mask(partition(valid, bh, bw)[..., 0])
    if shift != (0, 0):
        ids = partition(shift_region_ids(hp, wp, bh, bw, *shift, device), bh, bw)[..., 0]
        mask = mask & (ids[:, :, None] == ids[:, None, :])
    return mask[:, None]


def block_attention(
    qkv: Tensor,
    block: tuple[int, int],
    num_heads: int,
    *,
    scale: float,
    dilated: bool = False,
    shift: tuple[int, int] = (0, 0),
    bias: Tensor | None = None,
    dropout_p: float = 0.0,
    reference: bool = False,
) -> Tensor:
    """(B, H, W, 3·heads·d) packed q|k|v -> (B, H, W, heads·d).

    Blocks are contiguous bh x bw windows, or with `dilated` the bh x bw pixels spaced
    Hp/bh rows and Wp/bw columns apart. `bias` (heads, L, L) is added to the logits.
    """
    b, h, w, _ = qkv.shape
    bh, bw = block
    hp, wp = round_up(h, bh), round_up(w, bw)
    partition, reverse = (
        (grid_partition, grid_reverse) if dilated else (window_partition, window_reverse)
    )
    qkv = _padding.pad_map(qkv, hp - h, wp - w)
    if shift != (0, 0):
        qkv = torch.roll(qkv, (-shift[0], -shift[1]), dims=(1, 2))
    blocks = partition(qkv, bh, bw)  # (B * nBlocks, L, 3C)
    length = bh * bw
    q, k, v = blocks.view(blocks.shape[0], length, 3, num_heads, -1).permute(2, 0, 3, 1, 4)
    mask = block_key_mask(h, w, block, dilated, shift, qkv.device)
    if mask is not None:
        mask = mask.expand(b, -1, -1, -1, -1).reshape(-1, 1, length, length)
    out = attend(
        q, k, v, scale=scale, mask=mask, bias=bias, dropout_p=dropout_p, reference=reference
    )
    out = reverse(out.transpose(1, 2).reshape(blocks.shape[0], length, -1), bh, bw, hp, wp)
    if shift != (0, 0):
        out = torch.roll(out, shift, dims=(1, 2))
    return out[:, :h, :w]
