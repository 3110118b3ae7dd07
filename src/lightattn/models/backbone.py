"""One pyramid backbone: stem, stages of blocks with downsampling between them, norm, head."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor, nn

from ..layers import create_attention, get_attention_class
from ._args import positive_int, stage_attn_kwargs
from ._blocks import Block, ConvFFN, Mlp, tokens_to_map
from ._downsample import DOWNSAMPLE_KINDS, make_downsample

FFN_KINDS = ("mlp", "conv")


@dataclass(frozen=True)
class AttnSpec:
    """A block's attention: a registered mechanism name and its keyword arguments."""

    name: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StageSpec:
    """One stage of a `Backbone`.

    - `dim`, `depth`, `num_heads` (None: the mechanism's default, dim // 32).
    - `pattern`: the blocks' attentions, repeated over the depth: `(AttnSpec(...),)` for one
      kind, Swin's `(window, shifted window)`, DAT's `(local, deformable)`; `None` in it makes
      an FFN-only block (LITv2's first stages).
    - `mlp_ratio` and `ffn`: "mlp" (Linear-GELU-Linear) or "conv" (a 3x3 depthwise conv after
      the first Linear, PVTv2/LITv2); `ffn_relu` adds PVTv2-li's ReLU before it.
    - `downsample`: how the stage starts (for the first stage, the stem): "patch"
      (Conv2d k = stride + LayerNorm), "conv" (the same without bias, DAT), "overlap"
      (Conv2d k, stride, padding k // 2 + LayerNorm, PVTv2; `kernel` defaults to 2·stride-1),
      "merge" (Swin's 2x2 patch merging), "dtm" (LITv2's deformable token merging).
      `stride`: 4 for the stems, 2 between stages.
    - `norm`: a LayerNorm closing the stage (PVTv2).
    """

    dim: int
    depth: int
    num_heads: int | None = None
    pattern: tuple[AttnSpec | None, ...] = (None,)
    mlp_ratio: float = 4.0
    ffn: str = "mlp"
    ffn_relu: bool = False
    downsample: str = "merge"
    stride: int = 2
    kernel: int | None = None
    norm: bool = False

    def __post_init__(self) -> None:
        positive_int("dim", self.dim)
        positive_int("depth", self.depth)
        positive_int("stride", self.stride)
        if not self.pattern or not all(a is None or isinstance(a, AttnSpec) for a in self.pattern):
            raise ValueError(f"pattern={self.pattern!r} must be a non-empty tuple of AttnSpec/None")
        if self.ffn not in FFN_KINDS:
            raise ValueError(f"ffn={self.ffn!r} is not one of {FFN_KINDS}")
        if self.downsample not in DOWNSAMPLE_KINDS:
            raise ValueError(f"downsample={self.downsample!r} is not one of {DOWNSAMPLE_KINDS}")
        if not self.mlp_ratio > 0:
            raise ValueError(f"mlp_ratio={self.mlp_ratio!r} must be positive")

    def block_attention(self, index: int) -> AttnSpec | None:
        return self.pattern[index % len(self.pattern)]

    @property
    def has_attention(self) -> bool:
        return any(a is not None for a in self.pattern)


def swap_attention(
    stages: Sequence[StageSpec], attn: str, attn_kwargs: object = None
) -> list[StageSpec]:
    """Every attention block of every stage made `attn` (a registered name) with
    `attn_kwargs` (one mapping, or one per stage); FFN-only blocks stay FFN-only."""
    get_attention_class(attn)  # ValueError naming an unknown mechanism
    per_stage = stage_attn_kwargs(attn_kwargs, len(stages))
    out = []
    for spec, kwargs in zip(stages, per_stage, strict=True):
        new = AttnSpec(attn, kwargs)
        out.append(replace(spec, pattern=tuple(None if a is None else new for a in spec.pattern)))
    return out


class Stage(nn.Module):
    """[downsample] -> blocks -> [norm] on (B, N, C) tokens of an H x W map."""

    def __init__(
        self,
        spec: StageSpec,
        in_dim: int | None,
        drop_path: Sequence[float],
        norm_eps: float,
        block_kwargs: Mapping[str, Any],
    ) -> None:
        super().__init__()
        self.downsample = None
        if in_dim is not None:
            self.downsample = make_downsample(
                spec.downsample, in_dim, spec.dim, spec.stride, spec.kernel
            )
        self.blocks = nn.ModuleList(
            make_block(spec, i, drop_path[i], norm_eps, block_kwargs) for i in range(spec.depth)
        )
        self.norm = nn.LayerNorm(spec.dim, eps=norm_eps) if spec.norm else None

    def forward(self, x: Tensor, h: int, w: int) -> tuple[Tensor, int, int]:
        if self.downsample is not None:
            x, h, w = self.downsample(tokens_to_map(x, h, w))
        for block in self.blocks:
            x = block(x, h, w)
        if self.norm is not None:
            x = self.norm(x)
        return x, h, w

    def macs(self, h: int, w: int) -> tuple[int, int, int]:
        """MACs of the stage for an H x W input map, and its output size."""
        total = 0
        if self.downsample is not None:
            total += self.downsample.macs(h, w)
            h, w = self.downsample.out_size(h, w)
        return total + sum(block.macs(h, w) for block in self.blocks), h, w


def make_block(
    spec: StageSpec, index: int, drop_path: float, norm_eps: float, kw: Mapping[str, Any]
) -> Block:
    attn_spec = spec.block_attention(index)
    attn = None
    if attn_spec is not None:
        extra = {k: v for k, v in kw.items() if k in ("attn_drop", "proj_drop") and v}
        if not kw.get("qkv_bias", True):
            extra["qkv_bias"] = False
        attn = create_attention(
            attn_spec.name, spec.dim, spec.num_heads, **{**extra, **attn_spec.kwargs}
        )
    hidden = int(spec.dim * spec.mlp_ratio)
    drop = kw.get("proj_drop", 0.0)
    if spec.ffn == "conv":
        ffn = ConvFFN(spec.dim, hidden, drop, relu=spec.ffn_relu)
    else:
        ffn = Mlp(spec.dim, hidden, drop)
    return Block(spec.dim, attn, ffn, drop_path, norm_eps)


class Backbone(nn.Module):
    """A hierarchical vision transformer built from `StageSpec`s (Swin, PVTv2, LITv2, DAT and
    ACmix-Swin are instances; see `lightattn.list_models()`).

    Input (B, in_chans, H, W), any H, W >= 1 (odd and non-divisible sizes are padded where a
    stage downsamples; every attention masks its own padding). Between blocks the activations
    stay (B, N, C) tokens with their (H, W); maps are made only at convolutions.

    - `model(x)`: (B, num_classes) logits: final LayerNorm (`final_norm`), mean over tokens,
      Linear (Identity for num_classes=0). With `features_only=True`: a list of the stages'
      outputs as (B, C_i, H_i, W_i) maps (strides 4/8/16/32 for the standard stems), with no
      final norm or head built.
    - `forward_features(x)`: the last stage's output after the final norm, (B, C, H', W').
    - `macs(H, W)`: multiply-accumulates of the convs, linears and matmuls for one H x W image
      in the current mode (each attention counts its own, see `AttentionBase.macs`).
    - `feature_info`: per stage, `{"num_chs": C_i, "reduction": stride_i}`.

    Stochastic depth grows linearly from 0 to `drop_path_rate` over all blocks.
    `norm_eps` is the epsilon of the blocks' and the closing LayerNorms (1e-6 in PVTv2).
    """

    def __init__(
        self,
        stages: Sequence[StageSpec],
        in_chans: int = 3,
        num_classes: int = 1000,
        drop_path_rate: float = 0.0,
        final_norm: bool = True,
        norm_eps: float = 1e-5,
        features_only: bool = False,
        drop_rate: float = 0.0,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        qkv_bias: bool = True,
    ) -> None:
        super().__init__()
        if not stages:
            raise ValueError("stages must hold at least one StageSpec")
        self.in_chans = positive_int("in_chans", in_chans)
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
            raise ValueError(f"num_classes={num_classes!r} must be an integer >= 0")
        if not 0.0 <= drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate={drop_path_rate!r} must be in [0, 1)")
        self.specs = tuple(stages)
        self.num_classes = num_classes
        self.features_only = bool(features_only)
        depths = [s.depth for s in stages]
        rates = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        block_kwargs = {"attn_drop": attn_drop, "proj_drop": proj_drop, "qkv_bias": qkv_bias}
        first = stages[0]
        self.patch_embed = make_downsample(
            first.downsample, in_chans, first.dim, first.stride, first.kernel
        )
        self.stages = nn.ModuleList()
        start, in_dim = 0, None
        for spec in stages:
            stage_rates = rates[start : start + spec.depth]
            self.stages.append(Stage(spec, in_dim, stage_rates, norm_eps, block_kwargs))
            start, in_dim = start + spec.depth, spec.dim
        self.num_features = stages[-1].dim
        self.feature_info = self._feature_info()
        self.norm = self.head_drop = self.head = None
        if not self.features_only:
            if final_norm:
                self.norm = nn.LayerNorm(self.num_features, eps=norm_eps)
            self.head_drop = nn.Dropout(drop_rate)
            self.head = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()
        self._init_weights()

    def _feature_info(self) -> list[dict[str, int]]:
        info, reduction = [], 1
        for spec in self.specs:
            reduction *= spec.stride
            info.append({"num_chs": spec.dim, "reduction": reduction})
        return info

    def _init_weights(self) -> None:
        """timm's init for the model's own Linears (truncated normal, std 0.02, zero bias);
        each attention keeps its own initialisation (zero offsets, shift kernels, ...)."""
        own = [self.patch_embed, self.head]
        for stage in self.stages:
            own.append(stage.downsample)
            own.extend(block.mlp for block in stage.blocks)
        for module in own:
            for m in module.modules() if module is not None else ():
                if isinstance(m, nn.Linear):
                    nn.init.trunc_normal_(m.weight, std=0.02)
                    if m.bias is not None:
                        nn.init.zeros_(m.bias)

    def check_input(self, x: object) -> Tensor:
        if not isinstance(x, Tensor) or x.dim() != 4:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"input must be a (B, C, H, W) tensor, got {shape}")
        if x.shape[1] != self.in_chans:
            raise ValueError(
                f"input has C={x.shape[1]} channels (shape {tuple(x.shape)}) "
                f"but the model has in_chans={self.in_chans}"
            )
        if min(x.shape[0], x.shape[2], x.shape[3]) < 1:
            raise ValueError(f"input shape={tuple(x.shape)}: B, H and W must be >= 1")
        return x

    def stage_outputs(self, x: Tensor) -> list[tuple[Tensor, int, int]]:
        """Every stage's output as (B, N_i, C_i) tokens with its (H_i, W_i)."""
        tokens, h, w = self.patch_embed(self.check_input(x))
        outputs = []
        for stage in self.stages:
            tokens, h, w = stage(tokens, h, w)
            outputs.append((tokens, h, w))
        return outputs

    def forward_features(self, x: Tensor) -> Tensor:
        """(B, C_in, H, W) -> the last stage's normed output (B, C, H', W')."""
        tokens, h, w = self.stage_outputs(x)[-1]
        if self.norm is not None:
            tokens = self.norm(tokens)
        return tokens_to_map(tokens, h, w).contiguous()

    def forward_head(self, tokens: Tensor) -> Tensor:
        """(B, N, C) last-stage tokens (after the final norm) -> (B, num_classes)."""
        return self.head(self.head_drop(tokens.mean(dim=1)))

    def forward(self, x: Tensor) -> Tensor | list[Tensor]:
        outputs = self.stage_outputs(x)
        if self.features_only:
            return [tokens_to_map(t, h, w).contiguous() for t, h, w in outputs]
        tokens = outputs[-1][0]
        if self.norm is not None:
            tokens = self.norm(tokens)
        return self.forward_head(tokens)

    def macs(self, h: int, w: int) -> int:
        """Multiply-accumulates for one H x W image (convs, linears, matmuls), as computed in
        the current mode; norms, activations, pooling and sampling are not counted."""
        h, w = positive_int("h", h), positive_int("w", w)
        total = self.patch_embed.macs(h, w)
        h, w = self.patch_embed.out_size(h, w)
        for stage in self.stages:
            stage_macs, h, w = stage.macs(h, w)
            total += stage_macs
        if hasattr(self.head, "in_features"):  # an nn.Linear, or its int8 counterpart
            total += self.head.in_features * self.head.out_features
        return total

    def out_sizes(self, h: int, w: int) -> list[tuple[int, int]]:
        """Each stage's output (H_i, W_i) for an H x W input."""
        h, w = self.patch_embed.out_size(h, w)
        sizes = []
        for stage in self.stages:
            if stage.downsample is not None:
                h, w = stage.downsample.out_size(h, w)
            sizes.append((h, w))
        return sizes
