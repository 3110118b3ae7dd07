"""Pad-to-multiple and block partitions for windowed and dilated (grid) attention.

Padding is always masked by the caller. `PAD_FILL` is the value written into padded
positions; tests set it to a large number to show that padding never leaks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

PAD_FILL = 0.0


def tracing() -> bool:
    """True while torch.export / torch.compile / jit tracing: sizes may be symbolic, so
    shape-dependent shortcuts and caches are off."""
    return torch.compiler.is_exporting() or torch.compiler.is_compiling() or torch.jit.is_tracing()


def round_up(n: int, multiple: int) -> int:
    """The smallest multiple of `multiple` >= n (n >= 0). Spelled without negative operands:
    ONNX's integer division truncates, so `-(-n // m)` would round down once exported."""
    return (n + multiple - 1) // multiple * multiple


def mod(a: Tensor, b) -> Tensor:
    """`a % b` for an integer tensor a >= 0; spelled with division while tracing, because
    ONNX's exporter needs a constant divisor for `remainder`."""
    if tracing():
        return a - torch.div(a, b, rounding_mode="floor") * b
    return a % b


def pad_map(x: Tensor, pad_h: int, pad_w: int) -> Tensor:
    """Pad a (B, H, W, C) map at the bottom and right."""
    if not tracing() and pad_h == 0 and pad_w == 0:
        return x
    return F.pad(x, (0, 0, 0, pad_w, 0, pad_h), value=PAD_FILL)


def valid_map(h: int, w: int, hp: int, wp: int, device: torch.device) -> Tensor:
    """(1, Hp, Wp, 1) bool, True on the H x W pixels that are real."""
    rows = torch.arange(hp, device=device) < h
    cols = torch.arange(wp, device=device) < w
    return (rows[:, None] & cols[None, :])[None, :, :, None]


def window_partition(x: Tensor, wh: int, ww: int) -> Tensor:
    """(B, Hp, Wp, C) -> (B * nWin, wh * ww, C): contiguous wh x ww windows."""
    b, hp, wp, c = x.shape
    x = x.view(b, hp // wh, wh, wp // ww, ww, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, wh * ww, c)


def window_reverse(x: Tensor, wh: int, ww: int, hp: int, wp: int) -> Tensor:
    """Inverse of window_partition: (B * nWin, wh * ww, C) -> (B, Hp, Wp, C)."""
    c = x.shape[-1]
    x = x.view(-1, hp // wh, wp // ww, wh, ww, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, hp, wp, c)


def grid_partition(x: Tensor, gh: int, gw: int) -> Tensor:
    """(B, Hp, Wp, C) -> (B * nGroups, gh * gw, C): each group holds the pixels of one
    position class, spaced Hp / gh rows and Wp / gw columns apart (MaxViT grid)."""
    b, hp, wp, c = x.shape
    x = x.view(b, gh, hp // gh, gw, wp // gw, c).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(-1, gh * gw, c)


def grid_reverse(x: Tensor, gh: int, gw: int, hp: int, wp: int) -> Tensor:
    """Inverse of grid_partition."""
    c = x.shape[-1]
    x = x.view(-1, hp // gh, wp // gw, gh, gw, c).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(-1, hp, wp, c)
