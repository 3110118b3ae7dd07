"""Transformer blocks on (B, N, C) tokens of an H x W map: norm -> attention -> norm -> FFN."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ..layers import AttentionBase


def tokens_to_map(x: Tensor, h: int, w: int) -> Tensor:
    """(B, N, C) tokens -> a (B, C, H, W) view (channels_last strides, no copy)."""
    return x.transpose(1, 2).unflatten(2, (h, w))


def map_to_tokens(x: Tensor) -> Tensor:
    """(B, C, H, W) -> (B, N, C) (a view for a channels_last map)."""
    return x.flatten(2).transpose(1, 2)


class DropPath(nn.Module):
    """Stochastic depth (Huang et al., ECCV 2016): in training, zero a sample's residual branch
    with probability p and scale the kept ones by 1 / (1 - p). (B, ...) -> (B, ...)."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"drop_path={p!r} must be in [0, 1)")
        self.p = float(p)

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(1.0 - self.p)
        return x * keep / (1.0 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Mlp(nn.Module):
    """Linear(C, hidden) -> GELU -> Linear(hidden, C) on (B, N, C) tokens (ViT, Swin)."""

    def __init__(self, dim: int, hidden: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: Tensor, h: int, w: int) -> Tensor:
        return self.drop(self.fc2(self.drop(F.gelu(self.fc1(x)))))

    def macs(self, h: int, w: int) -> int:
        return 2 * h * w * self.fc1.in_features * self.fc1.out_features


class ConvFFN(Mlp):
    """Linear(C, hidden) -> [ReLU] -> 3x3 depthwise conv -> GELU -> Linear(hidden, C) on
    (B, N, C) tokens of an H x W map (PVTv2's and LITv2's FFN; `relu` as PVTv2-li).
    The depthwise conv zero-pads the map border."""

    def __init__(self, dim: int, hidden: int, drop: float = 0.0, relu: bool = False) -> None:
        super().__init__(dim, hidden, drop)
        self.relu = relu
        self.dwconv = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)

    def forward(self, x: Tensor, h: int, w: int) -> Tensor:
        x = self.fc1(x)
        if self.relu:
            x = F.relu(x)
        x = map_to_tokens(self.dwconv(tokens_to_map(x, h, w)))
        return self.drop(self.fc2(self.drop(F.gelu(x))))

    def macs(self, h: int, w: int) -> int:
        return super().macs(h, w) + 9 * h * w * self.fc1.out_features


class Block(nn.Module):
    """x + DropPath(attn(norm1(x))), then x + DropPath(ffn(norm2(x))); (B, N, C) tokens of an
    H x W map in and out. `attn=None` gives an FFN-only block (LITv2's first two stages), which
    has no norm1."""

    def __init__(
        self,
        dim: int,
        attn: AttentionBase | None,
        ffn: Mlp,
        drop_path: float = 0.0,
        norm_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps) if attn is not None else None
        self.attn = attn
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = ffn
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor, h: int, w: int) -> Tensor:
        if self.attn is not None:
            x = x + self.drop_path(self.attn.forward_tokens(self.norm1(x), h, w))
        return x + self.drop_path(self.mlp(self.norm2(x), h, w))

    def macs(self, h: int, w: int) -> int:
        attn = self.attn.macs(h, w) if self.attn is not None else 0
        return attn + self.mlp.macs(h, w)
