"""Full multi-head self-attention, the baseline every other mechanism is compared with."""

from __future__ import annotations

from torch import Tensor, nn

from ._attend import attend
from ._base import AttentionBase
from ._layout import linear_in, linear_out
from ._registry import register_attention


@register_attention("mhsa")
class MultiHeadSelfAttention(AttentionBase):
    """Global softmax attention over all N = H*W tokens (Vaswani et al. 2017; ViT).

    (B, C, H, W) -> (B, C, H, W), or (B, N, C) with hw -> (B, N, C).
    Cost O(N² C): MACs = 3NC² + 2N²C + NC². Fast path: `scaled_dot_product_attention`.
    Takes a per-sample `key_padding_mask`.
    """

    supports_key_padding_mask = True

    fuses_layout = True

    def __init__(
        self,
        dim: int,
        num_heads: int | None = None,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        reference: bool = False,
    ) -> None:
        super().__init__(dim, num_heads, attn_drop, proj_drop, reference)
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward_tokens(
        self, x: Tensor, h: int, w: int, key_padding_mask: Tensor | None = None
    ) -> Tensor:
        q, k, v = self.split_qkv(linear_in(self.qkv, x))
        mask = None if key_padding_mask is None else key_padding_mask[:, None, None, :]
        out = attend(
            q, k, v, scale=self.scale, mask=mask, dropout_p=self.attn_dropout_p,
            reference=self.reference,
        )  # fmt: skip
        return self.proj_drop(linear_out(self.proj, self.merge_heads(out), x))

    def macs(self, h: int, w: int) -> int:
        n, c = h * w, self.dim
        return 4 * n * c * c + 2 * n * n * c
