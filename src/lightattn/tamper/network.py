"""`stdc_tamper`: an STDC-Seg network with DANet attention for tamper localization, its
detail guidance (target and loss) and a small factory."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..layers import create_attention, list_attention
from ..layers._base import AttentionBase
from .stdc import ConvNormAct, STDCNet, conv_macs, scaled

LAPLACIAN = ((-1.0, -1.0, -1.0), (-1.0, 8.0, -1.0), (-1.0, -1.0, -1.0))
DETAIL_STRIDES = (1, 2, 4)
DETAIL_FUSE = (0.6, 0.3, 0.1)  # the official fuse kernel's initial (and effective) weights
DETAIL_THRESHOLD = 0.1


class AttentionRefinement(nn.Module):
    """Attention refinement module (ARM) of BiSeNet / STDC-Seg: (B, C_in, H, W) ->
    (B, C_out, H, W). feat = ConvBNReLU 3x3 (x); feat · sigmoid(BN(conv1x1(GAP(feat))))."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv = ConvNormAct(in_ch, out_ch, 3)
        self.attn = nn.Conv2d(out_ch, out_ch, 1, bias=False)
        self.bn = nn.BatchNorm2d(out_ch)

    def forward(self, x: Tensor) -> Tensor:
        feat = self.conv(x)
        weight = torch.sigmoid(self.bn(self.attn(feat.mean((2, 3), keepdim=True))))
        return feat * weight

    def macs(self, h: int, w: int) -> int:
        return self.conv.macs(h, w) + conv_macs(self.attn, 1, 1)[0]


class FeatureFusion(nn.Module):
    """Feature fusion module (FFM) of BiSeNet / STDC-Seg: (B, C_a, H, W), (B, C_b, H, W) ->
    (B, C_out, H, W). feat = ConvBNReLU 1x1 (cat(a, b)); feat + feat · a, with the channel
    weights a = sigmoid(conv1x1(ReLU(conv1x1(GAP(feat))))) through C_out / 4 channels."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv = ConvNormAct(in_ch, out_ch, 1)
        self.squeeze = nn.Conv2d(out_ch, max(1, out_ch // 4), 1, bias=False)
        self.excite = nn.Conv2d(max(1, out_ch // 4), out_ch, 1, bias=False)

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        feat = self.conv(torch.cat([a, b], dim=1))
        pooled = feat.mean((2, 3), keepdim=True)
        weight = torch.sigmoid(self.excite(F.relu(self.squeeze(pooled))))
        return feat + feat * weight

    def macs(self, h: int, w: int) -> int:
        pooled = conv_macs(self.squeeze, 1, 1)[0] + conv_macs(self.excite, 1, 1)[0]
        return self.conv.macs(h, w) + pooled


class OutputHead(nn.Module):
    """BiSeNet's output head: (B, C_in, H, W) -> (B, n_out, H, W); ConvBNReLU 3x3 to
    C_mid, then a 1x1 conv (with a bias, unlike the official one, for the rare-class
    logit)."""

    def __init__(self, in_ch: int, mid_ch: int, n_out: int = 1) -> None:
        super().__init__()
        self.conv = ConvNormAct(in_ch, mid_ch, 3)
        self.out = nn.Conv2d(mid_ch, n_out, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.conv(x))

    def macs(self, h: int, w: int) -> int:
        return self.conv.macs(h, w) + conv_macs(self.out, h, w)[0]


SRM_KERNELS = (
    ((0, 0, 0, 0, 0), (0, -1, 2, -1, 0), (0, 2, -4, 2, 0), (0, -1, 2, -1, 0), (0, 0, 0, 0, 0)),
    ((-1, 2, -2, 2, -1), (2, -6, 8, -6, 2), (-2, 8, -12, 8, -2), (2, -6, 8, -6, 2),
     (-1, 2, -2, 2, -1)),
    ((0, 0, 0, 0, 0), (0, 0, 0, 0, 0), (0, 1, -2, 1, 0), (0, 0, 0, 0, 0), (0, 0, 0, 0, 0)),
)  # fmt: skip
SRM_SCALES = (4.0, 12.0, 2.0)
SRM_CLIP = 3.0  # residual truncation, in 8-bit grey levels


class NoiseResidual(nn.Module):
    """Fixed SRM high-pass residuals (Fridrich & Kodovsky, "Rich Models for Steganalysis of
    Digital Images", 2012; the three used by RGB-N, Zhou et al., CVPR 2018) as extra input
    channels: (B, 3, H, W) in [0, 1] -> (B, 6, H, W) = RGB and three residuals of the grey
    image (in 8-bit levels, edge-replicated borders, clipped to +-3 and divided by 3).

    A pasted region keeps the noise, resampling and JPEG-block statistics of its source;
    these filters suppress the content so the first convolution sees them. No parameters.
    """

    def __init__(self) -> None:
        super().__init__()
        kernels = torch.tensor(SRM_KERNELS, dtype=torch.float32)
        kernels = kernels / torch.tensor(SRM_SCALES).view(3, 1, 1)
        self.register_buffer("kernels", kernels.unsqueeze(1) * 255.0 / SRM_CLIP, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        grey = x.mean(1, keepdim=True)
        padded = F.pad(grey, (2, 2, 2, 2), mode="replicate")
        residual = F.conv2d(padded, self.kernels.to(x.dtype)).clamp(-1.0, 1.0)
        return torch.cat([x, residual], dim=1)

    @staticmethod
    def macs(h: int, w: int) -> int:
        return 3 * 25 * h * w


class ChannelAttention(nn.Module):
    """Channel attention module (CAM), Fu et al., "Dual Attention Network for Scene
    Segmentation", CVPR 2019: (B, C, H, W) -> (B, C, H, W).

    With X the (B, C, N) map: E = X Xᵀ (C x C), A = softmax(max(E) - E) over the last axis
    (as DANet), out = gamma · (A X) + x, gamma a learned scalar initialised to 0.
    MACs = 2·N·C².
    """

    def __init__(self) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(()))

    def forward(self, x: Tensor) -> Tensor:
        flat = x.flatten(2)  # (B, C, N)
        energy = flat @ flat.transpose(1, 2)  # (B, C, C)
        attn = torch.softmax(energy.amax(-1, keepdim=True) - energy, dim=-1)
        return self.gamma * (attn @ flat).view_as(x) + x

    @staticmethod
    def macs(h: int, w: int, c: int) -> int:
        return 2 * h * w * c * c


def check_inner(inner: object, inner_kwargs: object) -> dict[str, Any]:
    """Validate `inner` (None or a registered name other than 'position') and return
    `inner_kwargs` as a dict; ValueError naming the argument otherwise."""
    if inner is not None and (not isinstance(inner, str) or inner not in list_attention()):
        known = [n for n in list_attention() if n != "position"]
        raise ValueError(f"inner={inner!r} is not a registered attention; known: {known}")
    if inner == "position":
        raise ValueError("inner='position' is not allowed (the position module wraps it)")
    if inner_kwargs is None:
        return {}
    if not isinstance(inner_kwargs, dict):
        raise ValueError(f"inner_kwargs={inner_kwargs!r} must be a dict or None")
    return dict(inner_kwargs)


class StdcTamper(nn.Module):
    """`stdc_tamper`: tamper localization network, STDC-Seg (Fan et al., "Rethinking BiSeNet
    For Real-time Semantic Segmentation", CVPR 2021) with DANet's attention modules (Fu et
    al., "Dual Attention Network for Scene Segmentation", CVPR 2019).

    Input (B, 3, H, W), any H, W >= 1 (the backbone's padded stride-2 ops give ceil sizes and
    every upsampling targets an explicit size, so nothing is padded or cropped). Output dict:
      "mask_logits": (B, 1, H, W) per-pixel tamper logits (sigmoid -> probability),
      "score_logits": (B,) image-level logits,
      "detail_logits": (B, 1, ceil(H/8), ceil(W/8)), in train mode only (detail guidance).

    `noise=True` feeds the backbone the RGB image and three fixed SRM noise residuals
    (`NoiseResidual`, 6 input channels; off by default, as STDC).

    Path: `STDCNet` features f8, f16, f32 (strides 8, 16, 32). The position attention module
    (`create_attention("position", C, inner=inner, **inner_kwargs)`: DANet's PAM, its N x N
    attention replaced by the registered mechanism `inner`; inner=None keeps DANet's own
    N x N form) refines f16 (`attention_at=16`, default) or f32 (`attention_at=32`), then,
    with `channel_attention=True`, DANet's CAM (applied after the PAM, both residual with
    gamma = 0 at start). The refined map replaces the backbone's map in the head only (the
    backbone's later stage sees the plain map). Context path as STDC-Seg: ARM(f32) +
    ConvBNReLU 1x1 (GAP(f32)) -> nearest x2 -> ConvBNReLU 3x3 -> + ARM(f16) -> nearest x2 ->
    ConvBNReLU 3x3 = c8; FFM(f8, c8) -> OutputHead -> 1 logit at 1/8 -> bilinear to H x W.
    Image score: a linear layer on GAP(f32) (after the attention if attention_at=32).
    Detail head (train only): OutputHead(f8) -> 1 logit at 1/8, for `detail_loss` against
    `detail_target(mask)`. Head widths scale with `width`: 128 (context), 256 (fusion),
    64 (detail), as STDC-Seg at width 1. Train with batches of >= 2 images: as in STDC-Seg,
    BatchNorm acts on the pooled 1 x 1 maps (ARM, global context), which one image cannot
    normalise in train mode (PyTorch raises a ValueError).
    """

    def __init__(
        self,
        variant: str = "stdc1",
        width: float = 1.0,
        inner: str | None = "mhsa",
        inner_kwargs: dict[str, Any] | None = None,
        channel_attention: bool = False,
        attention_at: int = 16,
        conv_last: bool = False,
        noise: bool = False,
    ) -> None:
        super().__init__()
        kwargs = check_inner(inner, inner_kwargs)
        if attention_at not in (16, 32):
            raise ValueError(f"attention_at={attention_at!r} must be 16 or 32")
        if not isinstance(noise, bool):
            raise ValueError(f"noise={noise!r} must be True or False")
        self.noise = NoiseResidual() if noise else None
        in_chans = 6 if noise else 3
        self.backbone = STDCNet(variant, width, conv_last=conv_last, in_chans=in_chans)
        self.variant, self.width, self.inner = self.backbone.variant, self.backbone.width, inner
        self.attention_at = attention_at
        c8, c16, c32 = self.backbone.channels[2:]
        ctx, fuse, mid = (scaled(n, self.width) for n in (128, 256, 64))
        att_dim = c16 if attention_at == 16 else c32
        self.position: AttentionBase = create_attention("position", att_dim, inner=inner, **kwargs)
        self.channel = ChannelAttention() if channel_attention else None
        self.arm16, self.arm32 = AttentionRefinement(c16, ctx), AttentionRefinement(c32, ctx)
        self.global_context = ConvNormAct(c32, ctx, 1)
        self.up32, self.up16 = ConvNormAct(ctx, ctx, 3), ConvNormAct(ctx, ctx, 3)
        self.ffm = FeatureFusion(c8 + ctx, fuse)
        self.seg_head = OutputHead(fuse, fuse)
        self.detail_head = OutputHead(c8, mid)
        self.score_head = nn.Linear(c32, 1)
        self._init_head()

    def _init_head(self) -> None:
        """Kaiming-normal (a=1) head convs, as STDC-Seg; the backbone and attention keep theirs."""
        for name, m in self.named_modules():
            if isinstance(m, nn.Conv2d) and not name.startswith(("backbone", "position")):
                nn.init.kaiming_normal_(m.weight, a=1)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def _attend(self, x: Tensor) -> Tensor:
        x = self.position(x)
        return x if self.channel is None else self.channel(x)

    def _context(self, f16: Tensor, f32: Tensor) -> Tensor:
        """STDC-Seg's context path up to 1/16: (f16, f32) -> (B, ctx, H16, W16)."""
        glob = self.global_context(f32.mean((2, 3), keepdim=True))
        up = F.interpolate(self.arm32(f32) + glob, size=f16.shape[-2:], mode="nearest")
        return self.arm16(f16) + self.up32(up)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        check_image(x)
        feats = self.backbone(x if self.noise is None else self.noise(x))
        f8, f16, f32 = feats[2:]
        if self.attention_at == 16:
            f16 = self._attend(f16)
        else:
            f32 = self._attend(f32)
        c8 = F.interpolate(self._context(f16, f32), size=f8.shape[-2:], mode="nearest")
        fused = self.ffm(f8, self.up16(c8))
        mask = F.interpolate(
            self.seg_head(fused), size=x.shape[-2:], mode="bilinear", align_corners=False
        )
        out = {"mask_logits": mask, "score_logits": self.score_head(f32.mean((2, 3))).squeeze(1)}
        if self.training:
            out["detail_logits"] = self.detail_head(f8)
        return out

    def macs(self, h: int, w: int, detail: bool = False) -> int:
        """Multiply-accumulates of the convs, linears and attention matmuls for one H x W
        image in eval mode (`detail=True`: plus the train-only detail head). Interpolation,
        pooling, BN and elementwise ops are not counted."""
        (h8, w8), (h16, w16), (h32, w32) = self.backbone.feature_sizes(h, w)[2:]
        ah, aw = (h16, w16) if self.attention_at == 16 else (h32, w32)
        total = self.backbone.macs(h, w) + self.position.macs(ah, aw)
        total += NoiseResidual.macs(h, w) if self.noise is not None else 0
        if self.channel is not None:
            total += ChannelAttention.macs(ah, aw, self.position.dim)
        total += self.arm32.macs(h32, w32) + self.global_context.macs(1, 1)
        total += self.up32.macs(h16, w16) + self.arm16.macs(h16, w16) + self.up16.macs(h8, w8)
        total += self.ffm.macs(h8, w8) + self.seg_head.macs(h8, w8)
        total += self.score_head.in_features
        return total + (self.detail_head.macs(h8, w8) if detail else 0)


def check_image(x: object) -> None:
    """ValueError unless x is a floating (B, 3, H, W) tensor."""
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise ValueError("input must be a floating point torch.Tensor")
    if x.dim() != 4 or x.shape[1] != 3 or min(x.shape) < 1:
        raise ValueError(f"input shape={tuple(x.shape)} must be (B, 3, H, W)")


def detail_target(mask: Tensor) -> Tensor:
    """STDC's detail ground truth: (B, H, W) or (B, 1, H, W) mask -> (B, 1, H, W) in {0, 1}.

    The mask (binarised at 0.5) is convolved with the Laplacian [-1 ... 8 ... -1] (3x3, zero
    padding) at strides 1, 2 and 4; each map is clamped at 0, upsampled (nearest) to H x W and
    thresholded at 0.1; the three are fused by a 1x1 conv with weights (0.6, 0.3, 0.1) and
    thresholded at 0.1 again (MichaelFan01/STDC-Seg, loss/detail_loss.py). The official fuse
    kernel is a Parameter, but the threshold after it passes no gradient, so it is fixed here.
    As there, a pixel marked at stride 4 alone scores 0.1 and is dropped: the target is the
    union of the stride-1 and stride-2 edges, i.e. the inner rim of each region, 1-2 px wide.
    """
    if mask.dim() == 3:
        mask = mask.unsqueeze(1)
    if mask.dim() != 4 or mask.shape[1] != 1:
        raise ValueError(f"mask shape={tuple(mask.shape)} must be (B, H, W) or (B, 1, H, W)")
    dtype = mask.dtype if mask.is_floating_point() else torch.float32
    binary = (mask > 0.5).to(dtype)
    kernel = torch.tensor(LAPLACIAN, dtype=dtype, device=mask.device).view(1, 1, 3, 3)
    levels = []
    for stride in DETAIL_STRIDES:
        edges = F.conv2d(binary, kernel, stride=stride, padding=1).clamp(min=0)
        if edges.shape[-2:] != mask.shape[-2:]:
            edges = F.interpolate(edges, size=mask.shape[-2:], mode="nearest")
        levels.append((edges > DETAIL_THRESHOLD).to(dtype))
    fuse = torch.tensor(DETAIL_FUSE, dtype=dtype, device=mask.device).view(1, -1, 1, 1)
    return (F.conv2d(torch.cat(levels, dim=1), fuse) > DETAIL_THRESHOLD).to(dtype)


def dice_loss(probs: Tensor, target: Tensor, smooth: float = 1.0) -> Tensor:
    """1 - (2·|P∩T| + s) / (|P| + |T| + s) per sample (soft, over all its pixels), averaged
    over the batch; probs and target (B, ...) in [0, 1]."""
    p, t = probs.flatten(1), target.flatten(1)
    dice = (2 * (p * t).sum(1) + smooth) / (p.sum(1) + t.sum(1) + smooth)
    return (1 - dice).mean()


def detail_loss(logits: Tensor, target: Tensor) -> Tensor:
    """STDC's detail loss: BCE-with-logits (mean) + Dice of sigmoid(logits), both against
    `target` (B, 1, H, W) from `detail_target`; logits (B, 1, h, w) of another size are
    first upsampled bilinearly to H x W (as the official code does)."""
    if logits.shape[-2:] != target.shape[-2:]:
        logits = F.interpolate(logits, size=target.shape[-2:], mode="bilinear", align_corners=False)
    target = target.to(logits.dtype)
    bce = F.binary_cross_entropy_with_logits(logits, target)
    return bce + dice_loss(torch.sigmoid(logits), target)


TAMPER_MODELS: dict[str, type[nn.Module]] = {"stdc_tamper": StdcTamper}


def list_tamper_models() -> list[str]:
    """Names `create_tamper_model` accepts."""
    return sorted(TAMPER_MODELS)


def create_tamper_model(
    name: str = "stdc_tamper",
    variant: str = "stdc1",
    width: float = 1.0,
    inner: str | None = "mhsa",
    inner_kwargs: dict[str, Any] | None = None,
    channel_attention: bool = False,
    **kwargs: Any,
) -> nn.Module:
    """Build the tamper localization network `name` (see `StdcTamper` for the arguments;
    other keyword arguments, e.g. attention_at=32, go to its constructor)."""
    if name not in TAMPER_MODELS:
        raise ValueError(f"name={name!r} is not a tamper model; known: {list_tamper_models()}")
    return TAMPER_MODELS[name](
        variant=variant, width=width, inner=inner, inner_kwargs=inner_kwargs,
        channel_attention=channel_attention, **kwargs,
    )  # fmt: skip
