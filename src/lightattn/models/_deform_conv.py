"""A deformable convolution (DCNv1) on torch ops: grid_sample, then one matmul."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class DeformConv2d(nn.Module):
    """Deformable convolution with kernel k, stride k and no padding (Dai et al., "Deformable
    Convolutional Networks", ICCV 2017), as LITv2's DTM uses it.

    (B, C, H, W) with H, W multiples of k -> (B, C', H / k, W / k). An offset conv
    (Conv2d(C, 2k², k, stride k), zero-initialised, so the layer starts as a plain strided
    conv) predicts a (dy, dx) pair per kernel tap i = ky·k + kx, in that channel order
    (mmcv's and the official DCN's layout). Tap i of output pixel (oy, ox) samples the input
    bilinearly at (oy·k + ky + dy, ox·k + kx + dx), zero outside the map; then
    out = weight · samples + bias. Positions and sampling run in fp32.
    MACs = H'W'·2k²·C·k² (offsets) + H'W'·C'·C·k² (the conv).
    """

    def __init__(self, in_dim: int, dim: int, kernel_size: int = 2) -> None:
        super().__init__()
        k = kernel_size
        self.kernel_size = k
        self.weight = nn.Parameter(torch.empty(dim, in_dim, k, k))
        self.bias = nn.Parameter(torch.empty(dim))
        self.offset = nn.Conv2d(in_dim, 2 * k * k, k, k)
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        bound = 1 / math.sqrt(in_dim * k * k)
        nn.init.uniform_(self.bias, -bound, bound)
        nn.init.zeros_(self.offset.weight)
        nn.init.zeros_(self.offset.bias)

    def sampling_grid(self, offsets: Tensor, h: int, w: int) -> Tensor:
        """(B, 2k², H', W') offsets -> (B, k²·H', W', 2) fp32 grid_sample grid in (x, y)
        order, normalised with align_corners=False (pixel i at (2i + 1) / W - 1)."""
        b, _, ho, wo = offsets.shape
        k = self.kernel_size
        offsets = offsets.float().view(b, k * k, 2, ho, wo)
        taps = torch.arange(k, device=offsets.device, dtype=torch.float32)
        rows = torch.arange(ho, device=offsets.device, dtype=torch.float32) * k
        cols = torch.arange(wo, device=offsets.device, dtype=torch.float32) * k
        # base pixel of tap (ky, kx) at output (oy, ox): (oy·k + ky, ox·k + kx)
        base_y = (rows[None, :, None] + taps.repeat_interleave(k)[:, None, None]).expand(-1, -1, wo)
        base_x = (cols[None, None, :] + taps.repeat(k)[:, None, None]).expand(-1, ho, -1)
        y = base_y + offsets[:, :, 0]
        x = base_x + offsets[:, :, 1]
        grid = torch.stack([(2 * x + 1) / w - 1, (2 * y + 1) / h - 1], dim=-1)
        return grid.view(b, k * k * ho, wo, 2)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        k = self.kernel_size
        if h % k or w % k:
            raise ValueError(f"input H, W=({h}, {w}) must be multiples of kernel_size={k}")
        offsets = self.offset(x)
        ho, wo = offsets.shape[-2:]
        grid = self.sampling_grid(offsets, h, w)
        samples = F.grid_sample(x.float(), grid, mode="bilinear", align_corners=False)
        cols = samples.to(x.dtype).reshape(b, c * k * k, ho * wo)  # index c·k² + tap
        out = self.weight.view(self.weight.shape[0], -1) @ cols + self.bias[:, None]
        return out.view(b, -1, ho, wo)

    def macs(self, ho: int, wo: int) -> int:
        """For an H' x W' output."""
        return ho * wo * (self.offset.weight.numel() + self.weight.numel())
