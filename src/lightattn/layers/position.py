"""DANet position attention module, optionally with any registered mechanism inside."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._attend import attend
from ._base import AttentionBase
from ._checks import check_positive_int
from ._padding import tracing
from ._registry import create_attention, get_attention_class, register_attention

SMALL_MAP = 256


@register_attention("position")
class PositionAttention(AttentionBase):
    """Position attention module (PAM), Fu et al., "Dual Attention Network for Scene
    Segmentation", CVPR 2019.

    (B, C, H, W) -> (B, C, H, W), or (B, N, C) with hw -> (B, N, C).
    Default form (single-headed, as in DANet): B' = query(x), C' = key(x), both 1x1 to
    c' = max(1, C // reduction) channels, D = value(x) 1x1 to C channels,
    S = softmax(B'ᵀC') over the N keys with no 1/sqrt(c') scale (as in DANet),
    out = gamma · (D Sᵀ) + x, gamma a learned scalar initialised to 0 (identity at start).
    MACs = NC(2c' + C) + 2N²C: the fast path zero-pads q and k to C channels so that SDPA's
    fused kernel applies (the reference path, N²(c' + C), materialises the N x N matrix).
    `num_heads` must divide dim (the contract) but the
    N x N form does not use it.

    Lightweight form: `inner="<registered name>"` replaces the N x N attention (B', C', D
    and S) by that mechanism, built as create_attention(inner, dim, num_heads,
    qkv_bias=, attn_drop=, proj_drop=, reference=, **inner_kwargs); out = gamma · inner(x) + x and
    `macs` is the inner mechanism's. Setting `reference` propagates to the inner module.
    Keyword arguments other than the ones above are the inner mechanism's; without
    `inner` they are an error.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int | None = None,
        inner: str | None = None,
        reduction: int | None = None,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        reference: bool = False,
        **inner_kwargs: Any,
    ) -> None:
        super().__init__(dim, num_heads, attn_drop, proj_drop, reference)
        if inner is not None and reduction is not None:
            raise ValueError(
                f"reduction={reduction!r} applies to the N x N form, not inner={inner!r}"
            )
        self.reduction = check_positive_int("reduction", 8 if reduction is None else reduction)
        self.gamma = nn.Parameter(torch.zeros(()))
        self.inner_name = inner
        self.inner: AttentionBase | None = None
        if inner is None:
            if inner_kwargs:
                raise ValueError(
                    f"unknown argument(s) {sorted(inner_kwargs)} for attention 'position' "
                    "(they are only accepted with inner=<name>); accepted: inner, reduction, "
                    "qkv_bias, attn_drop, proj_drop, reference"
                )
            self.qk_dim = max(1, dim // self.reduction)
            self.query = nn.Linear(dim, self.qk_dim, bias=qkv_bias)
            self.key = nn.Linear(dim, self.qk_dim, bias=False)  # a key bias cancels in softmax
            self.value = nn.Linear(dim, dim, bias=qkv_bias)
            return
        if not isinstance(inner, str):
            raise ValueError(f"inner={inner!r} must be a registered attention name")
        if get_attention_class(inner) is type(self):
            raise ValueError("inner='position' is not allowed (a position module inside itself)")
        try:
            self.inner = create_attention(
                inner, dim, self.num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop,
                proj_drop=proj_drop, reference=reference, **inner_kwargs,
            )  # fmt: skip
        except ValueError as err:
            raise ValueError(f"position(inner={inner!r}): {err}") from err

    @property
    def reference(self) -> bool:
        return self._reference

    @reference.setter
    def reference(self, value: bool) -> None:
        self._reference = bool(value)
        inner = self._modules.get("inner")
        if inner is not None:
            inner.reference = bool(value)

    def settings(self) -> dict[str, Any]:
        if self.inner is not None:
            return {"inner": self.inner_name}
        return {"reduction": self.reduction, "qk_dim": self.qk_dim}

    def forward_tokens(self, x: Tensor, h: int, w: int) -> Tensor:
        if self.inner is not None:
            return self.gamma * self.inner.forward_tokens(x, h, w) + x
        q, k, v = self.query(x), self.key(x), self.value(x)  # (B, N, c'), (B, N, c'), (B, N, C)
        explicit = self.reference or self._small(h * w)
        if not explicit and self.qk_dim < self.dim:
            # zero columns leave the logits unchanged, and equal q/k/v widths let SDPA use
            # its fused kernel (about 3x faster on CPU, no N x N matrix) instead of math
            q, k = (F.pad(t, (0, self.dim - self.qk_dim)) for t in (q, k))
        out = attend(q, k, v, scale=1.0, dropout_p=self.attn_dropout_p, reference=explicit)
        return self.gamma * self.proj_drop(out) + x

    @staticmethod
    def _small(n: int) -> bool:
        """Maps of at most SMALL_MAP tokens: the explicit N x N form beats the padded fused
        kernel there (measured on CPU: 0.66-0.94x at 8²-16², 1.6x faster from 20² up)."""
        return not tracing() and n <= SMALL_MAP

    def macs(self, h: int, w: int) -> int:
        if self.inner is not None:
            return self.inner.macs(h, w)
        n, c, cq = h * w, self.dim, self.qk_dim
        explicit = self.reference or self._small(n)
        logits_width = cq if explicit else c  # the fused path pads q and k to C
        return n * c * (2 * cq + c) + n * n * (logits_width + c)

    def useful_macs(self, h: int, w: int) -> int:
        """The zero channels the fast path pads q and k with are left out."""
        if self.inner is not None:
            return self.inner.useful_macs(h, w)
        n, c, cq = h * w, self.dim, self.qk_dim
        return n * c * (2 * cq + c) + n * n * (cq + c)
