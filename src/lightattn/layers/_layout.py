"""Projections that read and write an NCHW map's layout in place.

A (B, C, H, W) map fed to a mechanism is, as tokens, a channel-first view: (B, N, C) with
channel stride N. Making it contiguous tokens and the output a contiguous map again costs
two transposing copies (~11 GB/s here, 4x slower than a plain copy). A batched GEMM reads
or writes a transposed operand for free, so the first and last projections can absorb both
transposes. That pays for N >= C (measured on CPU, fp32: at 14² with C 320 and at 7² with
C 512 the batched GEMMs were slower than copy + linear), so smaller maps keep the copies.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ._padding import tracing


def channel_first(x: Tensor) -> bool:
    """Whether (B, N, C) tokens are a view of an NCHW map (token stride 1, channel stride N)
    large enough for the fused projections."""
    if x.dim() != 3 or tracing():
        return False
    n, c = x.shape[1], x.shape[2]
    return n > 1 and c > 1 and x.stride(1) == 1 and x.stride(2) == n and n >= c


def _plain(linear: nn.Module) -> bool:
    """A float nn.Linear without hooks (a quantized, pruned or wrapped one runs as itself)."""
    return (
        type(linear) is nn.Linear
        and type(linear.weight) is nn.Parameter
        and not linear._forward_hooks
        and not linear._forward_pre_hooks
    )


def linear_in(linear: nn.Module, x: Tensor) -> Tensor:
    """`linear(x)` for (B, N, C) tokens -> contiguous (B, N, C'); a channel-first view is read
    in place."""
    if not (channel_first(x) and _plain(linear)):
        return linear(x)
    b, n, _ = x.shape
    weight = linear.weight.t().expand(b, -1, -1)
    if linear.bias is None:
        return torch.bmm(x, weight)
    return torch.baddbmm(linear.bias.expand(b, n, -1), x, weight)


def linear_out(linear: nn.Module, y: Tensor, like: Tensor) -> Tensor:
    """`linear(y)` for (B, N, C) -> (B, N, C'). When `like` (the mechanism's input tokens) is
    a channel-first view, the result is written channel-first and returned as a (B, N, C')
    view of it, so that the output map needs no copy."""
    if not (channel_first(like) and _plain(linear)):
        return linear(y)
    b, n, _ = y.shape
    weight = linear.weight.expand(b, -1, -1)
    if linear.bias is None:
        return torch.bmm(weight, y.transpose(1, 2)).transpose(1, 2)
    bias = linear.bias[:, None].expand(b, -1, n)
    return torch.baddbmm(bias, weight, y.transpose(1, 2)).transpose(1, 2)


def cat_channels(parts: list[Tensor]) -> Tensor:
    """Concatenate (B, N, Ci) tokens along channels, keeping a channel-first layout."""
    if len(parts) == 1:
        return parts[0]
    if all(p.stride(1) == 1 and p.stride(2) == p.shape[1] for p in parts):
        return torch.cat([p.transpose(1, 2) for p in parts], dim=1).transpose(1, 2)
    return torch.cat(parts, dim=-1)


def conv_channels_last(conv: nn.Conv2d, x: Tensor) -> Tensor:
    """`conv(x)`; for a channels_last `x` at inference, with a cached channels_last copy of
    the weight (oneDNN otherwise reorders the weight on every call: ~0.15 ms per MB here)."""
    weight = conv.weight
    if (
        type(conv) is not nn.Conv2d
        or type(weight) is not nn.Parameter
        or conv._forward_hooks
        or conv._forward_pre_hooks
        or tracing()
        or (weight.requires_grad and torch.is_grad_enabled())
        or x.is_contiguous()
        or not x.is_contiguous(memory_format=torch.channels_last)
    ):
        return conv(x)
    key = (weight.data_ptr(), weight._version, weight.dtype, weight.device)
    cached = getattr(conv, "_channels_last_weight", None)
    if cached is None or cached[0] != key:
        cached = (key, weight.detach().contiguous(memory_format=torch.channels_last))
        conv._channels_last_weight = cached
    return conv._conv_forward(x, cached[1], conv.bias)
