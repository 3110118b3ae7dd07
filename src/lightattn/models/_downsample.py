"""Stems and downsampling between stages. Each takes a (B, C, H, W) map (for a stage, the
tokens seen as a map, no copy) and returns (B, N', C') tokens with the new H', W'; odd and
non-divisible sizes are zero-padded at the bottom and right, so any H, W >= 1 works."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ..layers._padding import tracing
from ._blocks import map_to_tokens
from ._deform_conv import DeformConv2d


def ceil_div(n: int, d: int) -> int:
    """ceil(n / d) for n >= 0, without negative operands (ONNX integer division truncates)."""
    return (n + d - 1) // d


def pad_to_multiple(x: Tensor, multiple: int) -> Tensor:
    """Zero-pad a (B, C, H, W) map at the bottom and right to multiples of `multiple`."""
    h, w = x.shape[-2:]
    pad_h, pad_w = ceil_div(h, multiple) * multiple - h, ceil_div(w, multiple) * multiple - w
    if tracing() or pad_h or pad_w:  # traced sizes are symbolic: always pad (maybe by 0)
        return F.pad(x, (0, pad_w, 0, pad_h))
    return x


class PatchEmbed(nn.Module):
    """Non-overlapping patches: Conv2d(k = stride = s) -> LayerNorm (Swin's and LITv2's stem;
    DAT's stem, and with `bias=False` DAT's downsampling). (B, C, H, W) -> (B, N', C'),
    H' = ceil(H / s): a partial border patch is zero-padded."""

    def __init__(self, in_dim: int, dim: int, stride: int, bias: bool = True) -> None:
        super().__init__()
        self.stride = stride
        self.proj = nn.Conv2d(in_dim, dim, stride, stride, bias=bias)
        self.norm = nn.LayerNorm(dim)

    def out_size(self, h: int, w: int) -> tuple[int, int]:
        return ceil_div(h, self.stride), ceil_div(w, self.stride)

    def forward(self, x: Tensor) -> tuple[Tensor, int, int]:
        x = self.proj(pad_to_multiple(x, self.stride))
        h, w = x.shape[-2:]
        return self.norm(map_to_tokens(x)), h, w

    def macs(self, h: int, w: int) -> int:
        ho, wo = self.out_size(h, w)
        return ho * wo * self.proj.weight.numel()


class OverlapEmbed(PatchEmbed):
    """Overlapping patches (PVTv2): Conv2d(k, stride s, padding k // 2) -> LayerNorm.
    (B, C, H, W) -> (B, N', C') with H' = (H + 2·(k // 2) - k) // s + 1 (ceil(H / s) for
    k = 2s - 1, PVTv2's 7/4 stem and 3/2 downsampling)."""

    def __init__(self, in_dim: int, dim: int, stride: int, kernel: int) -> None:
        super().__init__(in_dim, dim, stride)
        self.kernel = kernel
        self.proj = nn.Conv2d(in_dim, dim, kernel, stride, padding=kernel // 2)

    def out_size(self, h: int, w: int) -> tuple[int, int]:
        p, k, s = self.kernel // 2, self.kernel, self.stride
        return (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1

    def forward(self, x: Tensor) -> tuple[Tensor, int, int]:
        x = self.proj(x)
        h, w = x.shape[-2:]
        return self.norm(map_to_tokens(x)), h, w


class PatchMerging(nn.Module):
    """Swin's patch merging: each 2x2 neighbourhood concatenated in the order (0,0), (1,0),
    (0,1), (1,1) (row offset first, as timm and the official Swin), LayerNorm(4C),
    Linear(4C, C', no bias). (B, C, H, W) -> (B, N', C'), H' = ceil(H / 2)."""

    def __init__(self, in_dim: int, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(4 * in_dim)
        self.reduction = nn.Linear(4 * in_dim, dim, bias=False)

    def out_size(self, h: int, w: int) -> tuple[int, int]:
        return ceil_div(h, 2), ceil_div(w, 2)

    def forward(self, x: Tensor) -> tuple[Tensor, int, int]:
        b, c = x.shape[:2]
        x = pad_to_multiple(x, 2).permute(0, 2, 3, 1)  # (B, H, W, C)
        h, w = x.shape[1] // 2, x.shape[2] // 2
        x = x.reshape(b, h, 2, w, 2, c).permute(0, 1, 3, 4, 2, 5).reshape(b, h * w, 4 * c)
        return self.reduction(self.norm(x)), h, w

    def macs(self, h: int, w: int) -> int:
        ho, wo = self.out_size(h, w)
        return ho * wo * self.reduction.in_features * self.reduction.out_features


class DeformableTokenMerging(nn.Module):
    """LITv2's deformable token merging (DTM): a 2x2, stride-2 deformable convolution
    (DCNv1: learned offsets per kernel tap, zero-initialised) -> BatchNorm -> GELU.
    (B, C, H, W) -> (B, N', C'), H' = ceil(H / 2). Pan et al., "Fast Vision Transformers with
    HiLo Attention", NeurIPS 2022. The deformable conv runs on torch ops (grid_sample)."""

    def __init__(self, in_dim: int, dim: int) -> None:
        super().__init__()
        self.conv = DeformConv2d(in_dim, dim, kernel_size=2)
        self.norm = nn.BatchNorm2d(dim)

    def out_size(self, h: int, w: int) -> tuple[int, int]:
        return ceil_div(h, 2), ceil_div(w, 2)

    def forward(self, x: Tensor) -> tuple[Tensor, int, int]:
        x = F.gelu(self.norm(self.conv(pad_to_multiple(x, 2))))
        h, w = x.shape[-2:]
        return map_to_tokens(x), h, w

    def macs(self, h: int, w: int) -> int:
        ho, wo = self.out_size(h, w)
        return self.conv.macs(ho, wo)


DOWNSAMPLE_KINDS = ("patch", "conv", "overlap", "merge", "dtm")


def make_downsample(kind: str, in_dim: int, dim: int, stride: int, kernel: int | None) -> nn.Module:
    """The module for a stage's `downsample` kind (see `StageSpec`)."""
    if kind not in DOWNSAMPLE_KINDS:
        raise ValueError(f"downsample={kind!r} is not one of {DOWNSAMPLE_KINDS}")
    if kind == "patch":
        return PatchEmbed(in_dim, dim, stride)
    if kind == "conv":
        return PatchEmbed(in_dim, dim, stride, bias=False)
    if kind == "overlap":
        return OverlapEmbed(in_dim, dim, stride, 2 * stride - 1 if kernel is None else kernel)
    if stride != 2:
        raise ValueError(f"downsample={kind!r} halves the map: stride={stride!r} must be 2")
    if kind == "merge":
        return PatchMerging(in_dim, dim)
    return DeformableTokenMerging(in_dim, dim)
