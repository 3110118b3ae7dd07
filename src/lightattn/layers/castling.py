"""Linear-angular attention (Castling-ViT) with a training-only masked softmax branch."""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._base import AttentionBase, as_map, as_tokens
from ._checks import check_positive_int
from ._layout import linear_in, linear_out
from ._registry import register_attention

NORM_EPS = 1e-6


def unit(t: Tensor) -> Tensor:
    """t / sqrt(‖t‖² + NORM_EPS) over the last dim: a zero vector stays zero, no NaN."""
    squared = t.float().pow(2).sum(-1, keepdim=True)  # fp32: ‖t‖² overflows fp16 on large maps
    return t * torch.rsqrt(squared + NORM_EPS).to(t.dtype)


def check_aux_weight(weight: object) -> float:
    """A finite number >= 0 as a Python float."""
    try:
        value = float(weight)
    except (TypeError, ValueError):
        value = math.nan
    if isinstance(weight, (bool, str)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"aux_weight={weight!r} must be a finite number >= 0")
    return value


def aux_weight_schedule(
    step: int, total_steps: int, start: float = 1.0, end: float = 0.75
) -> float:
    """Weight of the auxiliary softmax branch at `step` of `total_steps`.

    Cosine decay from `start` at step 0 to exactly 0 at `end * total_steps`, 0 afterwards,
    so the last part of training already runs the inference-time (linear-only) network.
    """
    if total_steps <= 0 or not 0.0 < end <= 1.0:
        raise ValueError(f"total_steps={total_steps!r} must be > 0 and end={end!r} in (0, 1]")
    progress = step / (end * total_steps)
    if progress >= 1.0:
        return 0.0
    return start * 0.5 * (1.0 + math.cos(math.pi * max(progress, 0.0)))


def apply_aux_schedule(model: nn.Module, step: int, total_steps: int, **schedule: float) -> float:
    """Set the auxiliary weight of every CastlingAttention in `model` from
    `aux_weight_schedule(step, total_steps, **schedule)`; returns the weight. Call once per
    training step; call `switch_to_inference(model)` once it has reached 0."""
    weight = aux_weight_schedule(step, total_steps, **schedule)
    for module in model.modules():
        if isinstance(module, CastlingAttention) and module.has_aux:
            module.set_aux_weight(weight)
    return weight


def switch_to_inference(model: nn.Module) -> nn.Module:
    """Call `switch_to_inference()` on every CastlingAttention in `model`; returns `model`."""
    for module in model.modules():
        if isinstance(module, CastlingAttention):
            module.switch_to_inference()
    return model


@register_attention("castling")
class CastlingAttention(AttentionBase):
    """Linear-angular attention, You et al., "Castling-ViT", CVPR 2023.

    (B, C, H, W) -> (B, C, H, W), or (B, N, C) with hw -> (B, N, C).
    Per head (q, k, v of shape (B, h, N, d), q̂ = unit(q), k̂ = unit(k)):
        o = unit(½·v + (1/π)·q̂ (k̂ᵀ v) + aux_weight·(mask ⊙ S) v)
    where unit(t) = t / sqrt(‖t‖² + 1e-6) is the L2 normalisation over the head
    dimension d (as in the released code, with eps), ½·v is per token (the released code's
    form, i.e. the N×N kernel is q̂k̂ᵀ/π + ½·I), and the last term is the auxiliary branch,
    S = softmax(q kᵀ · d^-½), mask = S > threshold, used in training mode only. Then
        out = proj(merge_heads(o) + dwconv(v))
    with dwconv a depthwise `kernel_size`² conv over the H x W map of v (zero padding
    kernel_size // 2; the released code convolves the flat token axis with a (9, 1) kernel).
    o is computed in fp32 whatever the input dtype (k̂ᵀv sums N tokens: it overflows fp16
    on large maps) and cast back after the normalisation.

    Castling schedule: `aux_weight` (a Python float, not learned; default 1.0) is set with
    `set_aux_weight(w)`, e.g. each step from `apply_aux_schedule(model, step, total)`
    (cosine decay to 0 at 75% of training). Once it is 0, `switch_to_inference()` deletes
    the branch for good (`has_aux` False, `aux_weight` 0.0); the output is then exactly the
    training-mode output at weight 0. In eval mode the branch is never used.

    Checkpoints: the state is saved as the module's extra state, i.e. the state_dict key
    `<prefix>_extra_state` = {"aux": has_aux, "aux_weight": float}, and loading it restores
    both (a switched checkpoint switches the module it is loaded into). Checkpoints saved
    before this key existed (when `aux_weight` was a non-persistent buffer) lack it: load
    them with `strict=False`, which keeps the module's own state.

    Cost without the branch is linear in N: MACs = 4NC² + 2NCd + NC·kernel_size² (the
    reference path forms the N×N kernel: 2N²C instead of 2NCd); in training mode with the
    branch present and its weight > 0, `macs` adds the branch's 2N²C. `attn_drop` drops the
    branch's softmax weights (the only attention matrix; the mask is taken before
    dropout); the linear path forms none.
    """

    fuses_layout = True

    def __init__(
        self,
        dim: int,
        num_heads: int | None = None,
        kernel_size: int = 3,
        threshold: float = 0.02,
        aux_weight: float = 1.0,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        reference: bool = False,
    ) -> None:
        super().__init__(dim, num_heads, attn_drop, proj_drop, reference)
        self.kernel_size = check_positive_int("kernel_size", kernel_size)
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size={kernel_size!r} must be odd (a centred kernel)")
        if not 0.0 <= float(threshold) < 1.0:
            raise ValueError(f"threshold={threshold!r} must be in [0, 1)")
        self.threshold = float(threshold)
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.dwconv = nn.Conv2d(
            dim, dim, kernel_size, padding=kernel_size // 2, groups=dim, bias=False
        )
        self.proj = nn.Linear(dim, dim)
        self._aux_weight: float | None = check_aux_weight(aux_weight)
        self.aux_in_eval = False  # run the aux branch in eval too (to measure the switch)

    @property
    def has_aux(self) -> bool:
        return self._aux_weight is not None

    @property
    def aux_weight(self) -> float:
        """Weight of the auxiliary branch; 0.0 once switch_to_inference() removed it."""
        return self._aux_weight or 0.0

    def set_aux_weight(self, weight: float) -> None:
        """Weight of the auxiliary masked softmax branch (training only)."""
        if not self.has_aux:
            raise RuntimeError("the auxiliary branch was removed by switch_to_inference()")
        self._aux_weight = check_aux_weight(weight)

    def switch_to_inference(self) -> None:
        """Remove the auxiliary branch for good (idempotent)."""
        if not self.has_aux:
            return
        if self.aux_weight != 0:
            warnings.warn(
                f"switch_to_inference() with aux_weight={self.aux_weight:g} != 0 "
                "changes the training-mode output; drive it to 0 first",
                stacklevel=2,
            )
        self._aux_weight = None

    def get_extra_state(self) -> dict[str, Any]:
        return {"aux": self.has_aux, "aux_weight": self.aux_weight}

    def set_extra_state(self, state: Any) -> None:
        if not isinstance(state, dict) or set(state) != {"aux", "aux_weight"}:
            raise ValueError(
                f"castling extra state={state!r} must be a dict with keys 'aux' and 'aux_weight'"
            )
        weight = check_aux_weight(state["aux_weight"])
        self._aux_weight = weight if state["aux"] else None

    def settings(self) -> dict[str, Any]:
        items: dict[str, Any] = {"kernel_size": self.kernel_size}
        if self.has_aux:
            items.update(threshold=self.threshold, aux_weight=round(self.aux_weight, 6))
        else:
            items["aux"] = False
        return items

    def _aux_branch(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """aux_weight · (mask ⊙ S) v with S = softmax(q kᵀ · scale), mask = S > threshold."""
        probs = ((q @ k.transpose(-2, -1)) * self.scale).float().softmax(dim=-1).to(q.dtype)
        sparse = probs * (probs > self.threshold)
        if self.attn_dropout_p > 0:
            sparse = F.dropout(sparse, p=self.attn_dropout_p)
        return self.aux_weight * (sparse @ v)

    def _linear_angular(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """½·v + (1/π)·q̂ (k̂ᵀ v) per head in fp32, in O(N d²)."""
        q, k, v = unit(q.float()), unit(k.float()), v.float()
        if self.reference:
            n = q.shape[-2]
            eye = torch.eye(n, dtype=q.dtype, device=q.device)
            kernel = (q @ k.transpose(-2, -1)) / math.pi + 0.5 * eye  # (B, h, N, N)
            return kernel @ v
        return 0.5 * v + (q @ (k.transpose(-2, -1) @ v)) / math.pi

    @property
    def aux_active(self) -> bool:
        """Whether a forward now runs the auxiliary branch."""
        return (self.training or self.aux_in_eval) and self.aux_weight > 0

    def forward_tokens(self, x: Tensor, h: int, w: int) -> Tensor:
        b, n, c = x.shape
        qkv = linear_in(self.qkv, x)
        q, k, v = qkv.view(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        out = self._linear_angular(q, k, v)
        if self.aux_active:
            out = out + self._aux_branch(q, k, v)
        out = self.merge_heads(unit(out).to(x.dtype))
        out = out + as_tokens(self.dwconv(as_map(qkv[..., 2 * c :], h, w)))
        return self.proj_drop(linear_out(self.proj, out, x))

    def macs(self, h: int, w: int) -> int:
        """Cost of a forward in the current mode: the auxiliary branch's 2N²C is counted
        while it runs (training mode, branch present, weight > 0)."""
        n, c = h * w, self.dim
        total = 4 * n * c * c + n * c * self.kernel_size**2
        total += 2 * n * n * c if self.reference else 2 * n * c * self.head_dim
        if self.aux_active:
            total += 2 * n * n * c
        return total
