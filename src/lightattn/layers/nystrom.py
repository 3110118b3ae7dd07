"""Nyström low-rank attention (Nyströmformer), resolution-free."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ._attend import attend
from ._base import AttentionBase
from ._checks import check_positive_int
from ._layout import linear_in, linear_out
from ._padding import tracing
from ._registry import register_attention


def segment_means(x: Tensor, m: int) -> Tensor:
    """(..., N, d) -> (..., m, d): means of m contiguous segments of near-equal length."""
    n = x.shape[-2]
    if tracing():
        return _segment_means_matmul(x, m)
    if n % m == 0:
        return x.unflatten(-2, (m, n // m)).mean(dim=-2)
    seg = torch.arange(n, device=x.device) * m // n
    sums = torch.zeros(*x.shape[:-2], m, x.shape[-1], dtype=x.dtype, device=x.device)
    sums = sums.index_add(-2, seg, x)
    counts = torch.bincount(seg, minlength=m).to(x.dtype)
    return sums / counts[:, None]


def _segment_means_matmul(x: Tensor, m) -> Tensor:
    """`segment_means` as one (m, N) averaging matrix: no size-dependent branch or bincount,
    so it exports with symbolic N and m."""
    n = x.shape[-2]
    seg = torch.arange(n, device=x.device) * m // n
    member = (seg[None, :] == torch.arange(m, device=x.device)[:, None]).to(x.dtype)
    return (member / member.sum(-1, keepdim=True)) @ x


def iterative_pinv(a: Tensor, iterations: int) -> Tensor:
    """Moore-Penrose pseudo-inverse of each (m, m) matrix by the Nyströmformer iteration.

    The initial scale uses each matrix's own norms (not a max over the batch), so samples
    stay independent.
    """
    eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
    norm_1 = a.abs().sum(dim=-2).amax(dim=-1, keepdim=True)
    norm_inf = a.abs().sum(dim=-1).amax(dim=-1, keepdim=True)
    z = a.transpose(-2, -1) / (norm_1 * norm_inf)[..., None]
    for _ in range(iterations):
        az = a @ z
        z = 0.25 * z @ (13 * eye - az @ (15 * eye - az @ (7 * eye - az)))
    return z


@register_attention("nystrom")
class NystromAttention(AttentionBase):
    """Nyström approximation of softmax attention with m landmarks:
    softmax(q k̃ᵀ) · pinv(softmax(q̃ k̃ᵀ)) · softmax(q̃ kᵀ) v, where q̃, k̃ are the means of m
    contiguous token segments and pinv is the iterative Moore-Penrose pseudo-inverse.

    Xiong et al., "Nyströmformer", AAAI 2021.
    (B, C, H, W) -> (B, C, H, W), or (B, N, C) with hw -> (B, N, C).
    Resolution-free: landmarks are segment means, m = min(num_landmarks, N). With m = N it
    reproduces mhsa up to the pseudo-inverse iteration error. Cost O(N m C + m³):
    MACs = 4NC² + 4NmC + 2m²C + heads·iterations·4m³.
    The fast path runs the two N x m products as `scaled_dot_product_attention`;
    `attn_drop` drops the final N x m weights in both paths.
    """

    fuses_layout = True

    def __init__(
        self,
        dim: int,
        num_heads: int | None = None,
        num_landmarks: int = 64,
        pinv_iterations: int = 6,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        reference: bool = False,
    ) -> None:
        super().__init__(dim, num_heads, attn_drop, proj_drop, reference)
        self.num_landmarks = check_positive_int("num_landmarks", num_landmarks)
        self.pinv_iterations = check_positive_int("pinv_iterations", pinv_iterations)
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def settings(self) -> dict[str, Any]:
        return {"num_landmarks": self.num_landmarks, "pinv_iterations": self.pinv_iterations}

    def forward_tokens(self, x: Tensor, h: int, w: int) -> Tensor:
        q, k, v = self.split_qkv(linear_in(self.qkv, x))
        m = min(self.num_landmarks, x.shape[1])
        q_land, k_land = segment_means(q, m), segment_means(k, m)
        middle = (q_land @ k_land.transpose(-2, -1) * self.scale).float().softmax(-1)
        middle_inv = iterative_pinv(middle, self.pinv_iterations).to(q.dtype)
        if self.reference:
            out = self._reference(q, k, v, q_land, k_land, middle_inv)
        else:
            landmark_values = middle_inv @ attend(q_land, k, v, scale=self.scale)
            out = attend(
                q, k_land, landmark_values, scale=self.scale, dropout_p=self.attn_dropout_p
            )
        return self.proj_drop(linear_out(self.proj, self.merge_heads(out), x))

    def _reference(self, q, k, v, q_land, k_land, middle_inv) -> Tensor:
        def softmax_weights(a: Tensor, b: Tensor) -> Tensor:
            return (a @ b.transpose(-2, -1) * self.scale).float().softmax(-1).to(a.dtype)

        left = softmax_weights(q, k_land)  # (B, heads, N, m)
        right = softmax_weights(q_land, k)  # (B, heads, m, N)
        if self.attn_dropout_p > 0:
            left = torch.nn.functional.dropout(left, self.attn_dropout_p)
        return left @ (middle_inv @ (right @ v))

    def macs(self, h: int, w: int) -> int:
        n, c = h * w, self.dim
        m = min(self.num_landmarks, n)
        pinv = self.num_heads * self.pinv_iterations * 4 * m**3
        return 4 * n * c * c + 4 * n * m * c + 2 * m * m * c + pinv
