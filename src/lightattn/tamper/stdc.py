"""The STDC backbone of Fan et al., "Rethinking BiSeNet For Real-time Semantic Segmentation",
CVPR 2021 (STDC1 = "STDCNet813", STDC2 = "STDCNet1446" in the official code)."""

from __future__ import annotations

import math
from itertools import pairwise

import torch
from torch import Tensor, nn

VARIANTS: dict[str, tuple[int, ...]] = {"stdc1": (2, 2, 2), "stdc2": (4, 5, 3)}
# (params, MACs) at 224 x 224 as the issue quotes them; see `STDCNet` for which parts each
# figure counts (the params: no conv_last; the MACs: conv_last, and the classifier's linears)
PUBLISHED: dict[str, tuple[float, float]] = {"stdc1": (5.32e6, 806e6), "stdc2": (9.35e6, 1437e6)}
BASE = 64
CONV_LAST = 1024


def check_variant(variant: object) -> str:
    """The variant name, or ValueError naming `variant` and the known ones."""
    if variant not in VARIANTS:
        raise ValueError(f"variant={variant!r} is unknown; known: {', '.join(VARIANTS)}")
    return str(variant)


def check_width(width: object) -> float:
    """A width multiplier > 0 (a number, not a bool), or ValueError naming `width`."""
    if isinstance(width, bool) or not isinstance(width, (int, float)):
        raise ValueError(f"width={width!r} must be a number > 0")
    if not (width > 0 and math.isfinite(width)):
        raise ValueError(f"width={width!r} must be a finite number > 0")
    return float(width)


def scaled(channels: int, width: float, divisor: int = 8) -> int:
    """`channels * width` rounded to a multiple of `divisor` (at least `divisor`)."""
    return max(divisor, int(round(channels * width / divisor)) * divisor)


def conv_out(n: int, kernel: int, stride: int, padding: int) -> int:
    """Output length of a convolution or pooling along one axis (floor mode)."""
    return (n + 2 * padding - kernel) // stride + 1


def conv_macs(conv: nn.Conv2d, h: int, w: int) -> tuple[int, int, int]:
    """(MACs, H_out, W_out) of `conv` on an H x W map, one image."""
    (kh, kw), (sh, sw), (ph, pw) = conv.kernel_size, conv.stride, conv.padding
    ho, wo = conv_out(h, kh, sh, ph), conv_out(w, kw, sw, pw)
    per_pixel = conv.out_channels * (conv.in_channels // conv.groups) * kh * kw
    return ho * wo * per_pixel, ho, wo


class ConvNormAct(nn.Module):
    """Conv (no bias, padding k // 2) -> BatchNorm -> ReLU (optional):
    (B, C_in, H, W) -> (B, C_out, ceil(H / s), ceil(W / s)); STDC's `ConvX`."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel: int = 3,
        stride: int = 1,
        groups: int = 1,
        act: bool = True,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_ch)
        self.act = nn.ReLU(inplace=True) if act else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.bn(self.conv(x)))

    def macs(self, h: int, w: int) -> int:
        return conv_macs(self.conv, h, w)[0]

    def out_size(self, h: int, w: int) -> tuple[int, int]:
        return conv_macs(self.conv, h, w)[1:]


def branch_widths(out_ch: int, block_num: int) -> list[int]:
    """Output widths of an STDC module's convs: C/2, C/4, ..., with the last two equal
    (block_num=4: C/2, C/4, C/8, C/8, summing to C)."""
    if isinstance(block_num, bool) or not isinstance(block_num, int) or block_num < 2:
        raise ValueError(f"block_num={block_num!r} must be an integer >= 2")
    if out_ch % 2 ** (block_num - 1):
        raise ValueError(f"out_ch={out_ch} must be divisible by 2**(block_num - 1)")
    return [out_ch // 2 ** (min(i, block_num - 2) + 1) for i in range(block_num)]


class STDCModule(nn.Module):
    """The STDC module ("CatBottleneck" of the official code), Fan et al., CVPR 2021:
    (B, C_in, H, W) -> (B, C_out, ceil(H / s), ceil(W / s)), s in {1, 2}.

    A 1x1 ConvBNReLU to C/2, then 3x3 ConvBNReLUs to C/4, C/8, C/8 (block_num=4), each fed
    by the previous one; the four outputs are concatenated. With stride 2, a 3x3 depthwise
    stride-2 conv + BN sits between the first and the second conv, and the first conv's
    output enters the concatenation through a 3x3 stride-2 average pool.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, block_num: int = 4) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride={stride!r} must be 1 or 2")
        widths = branch_widths(out_ch, block_num)
        self.stride = stride
        convs = [ConvNormAct(in_ch, widths[0], kernel=1)]
        convs += [ConvNormAct(a, b, kernel=3) for a, b in pairwise(widths)]
        self.convs = nn.ModuleList(convs)
        self.down: ConvNormAct | None = None
        self.skip: nn.AvgPool2d | None = None
        if stride == 2:
            self.down = ConvNormAct(widths[0], widths[0], 3, stride=2, groups=widths[0], act=False)
            self.skip = nn.AvgPool2d(3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        first = self.convs[0](x)
        out = first if self.down is None else self.down(first)
        outs = [first if self.skip is None else self.skip(first)]
        for conv in self.convs[1:]:
            out = conv(out)
            outs.append(out)
        return torch.cat(outs, dim=1)

    def macs(self, h: int, w: int) -> int:
        total = self.convs[0].macs(h, w)
        if self.down is not None:
            total += self.down.macs(h, w)
            h, w = self.down.out_size(h, w)
        return total + sum(conv.macs(h, w) for conv in self.convs[1:])

    def out_size(self, h: int, w: int) -> tuple[int, int]:
        return (h, w) if self.down is None else self.down.out_size(h, w)


class STDCNet(nn.Module):
    """STDC backbone (Short-Term Dense Concatenate network), Fan et al., "Rethinking BiSeNet
    For Real-time Semantic Segmentation", CVPR 2021; official code MichaelFan01/STDC-Seg,
    nets/stdcnet.py.

    (B, 3, H, W) -> five maps at strides 2, 4, 8, 16, 32: (B, C_i, ceil(H / s), ceil(W / s))
    with C = (b/2, b, 4b, 8b, 16b), b = 64·width rounded to a multiple of 8 (width=1: 32, 64,
    256, 512, 1024). Any H, W: every stride-2 op is a padded 3x3 (ceil sizes).

    Stem: ConvBNReLU 3 -> b/2 (3x3, s2), b/2 -> b (3x3, s2); then three stages of
    `STDCModule`s (the first of each with stride 2) of 4b, 8b, 16b channels, block counts
    STDC1 (2, 2, 2), STDC2 (4, 5, 3). No classifier head.

    `conv_last=True` appends the official model's `conv_last`, a 1x1 ConvBNReLU 16b ->
    max(1024·width, 16b), to the 1/32 map (the official `use_conv_last` option).

    Published sizes at 224² (the issue's figures): STDC1 5.32M params / 806M MACs, STDC2
    9.35M / 1437M. Counted here (tests/test_tamper_network.py), they mix two definitions:
      params: this backbone WITHOUT `conv_last` (and without the classifier) has 5,318,304
        (STDC1) and 9,348,768 (STDC2) parameters, BN included: 5.32M and 9.35M exactly;
        with `conv_last` it has 6.37M / 10.40M (+20% / +11%);
      MACs: WITH `conv_last` it costs 804.0M / 1435.0M (-0.25% / -0.14%); adding the official
        classifier's fc (1024x1024) and linear (1024x1000) gives 806.07M / 1437.08M, the
        published figures exactly; without `conv_last` it is 752.6M / 1383.6M (-6.6%, -3.7%).
    So the params figure is the feature extractor's and the MACs figure the whole ImageNet
    classifier's (official `forward_impl`: features -> conv_last -> GAP -> fc -> linear);
    the full classifier has 8.44M / 12.47M params. Source: MichaelFan01/STDC-Seg,
    nets/stdcnet.py (STDCNet813 / STDCNet1446), counted with `macs` and FlopCounterMode.
    """

    def __init__(
        self,
        variant: str = "stdc1",
        width: float = 1.0,
        block_num: int = 4,
        conv_last: bool = False,
        in_chans: int = 3,
    ) -> None:
        super().__init__()
        self.variant = check_variant(variant)
        self.width = check_width(width)
        b = scaled(BASE, self.width)
        self.channels = [b // 2, b, 4 * b, 8 * b, 16 * b]
        self.stem2 = ConvNormAct(in_chans, b // 2, 3, stride=2)
        self.stem4 = ConvNormAct(b // 2, b, 3, stride=2)
        stages = []
        for i, depth in enumerate(VARIANTS[self.variant]):
            cin, cout = self.channels[i + 1], self.channels[i + 2]
            blocks = [STDCModule(cin if j == 0 else cout, cout, 2 if j == 0 else 1, block_num)
                      for j in range(depth)]  # fmt: skip
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.ModuleList(stages)
        self.conv_last: ConvNormAct | None = None
        if conv_last:
            last = max(scaled(CONV_LAST, self.width), self.channels[-1])
            self.conv_last = ConvNormAct(self.channels[-1], last, kernel=1)
            self.channels[-1] = last
        self._init_weights()

    def _init_weights(self) -> None:
        """As the official code: Kaiming-normal (fan_out) convs, BN weight 1 and bias 0."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> list[Tensor]:
        feats = [self.stem2(x)]
        feats.append(self.stem4(feats[-1]))
        for stage in self.stages:
            feats.append(stage(feats[-1]))
        if self.conv_last is not None:
            feats[-1] = self.conv_last(feats[-1])
        return feats

    def feature_sizes(self, h: int, w: int) -> list[tuple[int, int]]:
        """(H, W) of the five output maps for an H x W input."""
        sizes = [self.stem2.out_size(h, w)]
        sizes.append(self.stem4.out_size(*sizes[-1]))
        for stage in self.stages:
            sizes.append(stage[0].out_size(*sizes[-1]))
        return sizes

    def macs(self, h: int, w: int) -> int:
        """Multiply-accumulates of the convs for one H x W image (BN, ReLU, pooling and the
        concatenations are not counted)."""
        sizes = [(h, w), *self.feature_sizes(h, w)]
        total = self.stem2.macs(*sizes[0]) + self.stem4.macs(*sizes[1])
        for stage, (sh, sw) in zip(self.stages, sizes[2:5], strict=True):
            total += stage[0].macs(sh, sw)
            sh, sw = stage[0].out_size(sh, sw)
            total += sum(block.macs(sh, sw) for block in stage[1:])
        if self.conv_last is not None:
            total += self.conv_last.macs(*sizes[-1])
        return total
