"""Kernelized linear attention with the elu + 1 feature map."""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from ._base import AttentionBase
from ._layout import linear_in, linear_out
from ._registry import register_attention


def feature_map(x: Tensor) -> Tensor:
    return F.elu(x) + 1


@register_attention("linear")
class LinearAttention(AttentionBase):
    """Kernelized linear attention: o_i = φ(q_i)ᵀ (Σ_j φ(k_j) v_jᵀ) / (φ(q_i)ᵀ Σ_j φ(k_j)),
    φ(x) = elu(x) + 1.

    Katharopoulos et al., "Transformers are RNNs", ICML 2020.
    (B, C, H, W) -> (B, C, H, W), or (B, N, C) with hw -> (B, N, C).
    The fast path forms kᵀv first: O(N d²) time per head and O(N d) memory;
    MACs = 4NC² + 2NdC + NC. The reference path forms the row-normalised N x N matrix.
    There is no attention matrix to drop out: `attn_drop` is accepted (so one config can
    serve every mechanism) and has no effect. Takes a per-sample `key_padding_mask` (padded
    keys get φ(k) = 0, so they enter neither sum). Keys are scaled by
    1/N (the ratio is unchanged) so that fp16 sums over large maps stay finite; `eps` is added
    to the normaliser φ(q_i)ᵀ mean_j φ(k_j).
    """

    fuses_layout = True

    def __init__(
        self,
        dim: int,
        num_heads: int | None = None,
        eps: float = 1e-6,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        reference: bool = False,
    ) -> None:
        if not eps > 0:
            raise ValueError(f"eps={eps!r} must be positive")
        super().__init__(dim, num_heads, attn_drop, proj_drop, reference)
        self.eps = eps
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def settings(self) -> dict[str, Any]:
        return {"eps": self.eps}

    supports_key_padding_mask = True

    def forward_tokens(
        self, x: Tensor, h: int, w: int, key_padding_mask: Tensor | None = None
    ) -> Tensor:
        q, k, v = self.split_qkv(linear_in(self.qkv, x))
        # keys scaled by 1/N: the ratio is unchanged and fp16 sums over N do not overflow
        q, k = feature_map(q), feature_map(k) / k.shape[-2]
        if key_padding_mask is not None:
            k = k * key_padding_mask[:, None, :, None].to(k.dtype)
        if self.reference:
            weights = q @ k.transpose(-2, -1)
            out = (weights / (weights.sum(-1, keepdim=True) + self.eps)) @ v
        else:
            kv = k.transpose(-2, -1) @ v  # (B, heads, d, d)
            norm = q @ k.sum(dim=-2, keepdim=True).transpose(-2, -1)  # (B, heads, N, 1)
            out = (q @ kv) / (norm + self.eps)
        return self.proj_drop(linear_out(self.proj, self.merge_heads(out), x))

    def macs(self, h: int, w: int) -> int:
        n, c = h * w, self.dim
        if self.reference:  # the row-normalised N x N matrix
            return 4 * n * c * c + 2 * n * n * c
        return 4 * n * c * c + 2 * n * self.head_dim * c + n * c
