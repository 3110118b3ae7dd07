"""The contract every mechanism implements, and the layout handling they share."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ._checks import check_heads, check_positive_int, check_probability
from ._layout import channel_first
from ._padding import tracing


def check_hw(hw: object) -> tuple[int, int]:
    """(H, W) as Python ints; any integer type (numpy, 0-d integer tensors) is accepted."""
    if isinstance(hw, Tensor):
        hw = hw.tolist()
    if not isinstance(hw, (tuple, list)) or len(hw) != 2:
        raise ValueError(f"hw={hw!r} must be a pair (H, W)")
    return check_positive_int("hw[0] (H)", hw[0]), check_positive_int("hw[1] (W)", hw[1])


def to_tokens(
    x: Tensor, hw: object, dim: int, contiguous: bool = True
) -> tuple[Tensor, int, int, bool]:
    """Validate an input and return it as (B, N, C) tokens, H, W and whether it was a map.

    A map becomes contiguous tokens (one copy for NCHW) unless `contiguous` is False, when
    an NCHW map stays a transposed view (for a mechanism whose first op copies anyway)."""
    if not isinstance(x, Tensor):
        raise ValueError(f"input must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"input dtype={x.dtype} must be a floating point type")
    if x.dim() == 4:
        b, c, h, w = x.shape
        if b < 1 or h < 1 or w < 1:
            raise ValueError(f"input shape={tuple(x.shape)}: B, H and W must be >= 1")
        if c != dim:
            raise ValueError(f"input has C={c} channels (shape {tuple(x.shape)}) but dim={dim}")
        if hw is not None and check_hw(hw) != (h, w):
            raise ValueError(f"hw={tuple(hw)} does not match the input map H, W=({h}, {w})")
        # one copy for an NCHW map, none for channels_last: every later op then sees
        # contiguous tokens (a transposed view made pooling 9x and the copies 2x slower)
        tokens = x.permute(0, 2, 3, 1)
        return (tokens.contiguous() if contiguous else tokens).reshape(b, h * w, c), h, w, True
    if x.dim() == 3:
        b, n, c = x.shape
        if hw is None:
            raise ValueError(f"a (B, N, C) input of shape {tuple(x.shape)} needs hw=(H, W)")
        h, w = check_hw(hw)
        if h * w != n:
            raise ValueError(f"hw=({h}, {w}) gives H*W={h * w} but the input has N={n} tokens")
        if c != dim:
            raise ValueError(f"input has C={c} channels (shape {tuple(x.shape)}) but dim={dim}")
        if b < 1:
            raise ValueError(f"input shape={tuple(x.shape)}: B must be >= 1")
        return x, h, w, False
    raise ValueError(
        f"input must be (B, C, H, W) or (B, N, C) with hw; got shape={tuple(x.shape)} ({x.dim()}-D)"
    )


class AttentionBase(nn.Module):
    """Base class of every mechanism.

    Subclasses implement `forward_tokens(x, H, W)` on (B, N, C) tokens (row-major, N = H*W)
    and `macs(H, W)`; this class validates the input and converts the layouts:
    (B, C, H, W) -> (B, C, H, W) and (B, N, C) with `hw=(H, W)` -> (B, N, C).

    `reference=True` (constructor argument, or the attribute set later) selects the plain,
    readable implementation that the fast path is tested against.
    """

    name: ClassVar[str] = ""

    def __init__(
        self,
        dim: int,
        num_heads: int | None,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        reference: bool = False,
    ) -> None:
        super().__init__()
        self.num_heads = check_heads(dim, num_heads)
        self.dim = dim
        self.head_dim = dim // self.num_heads
        self.scale = self.head_dim**-0.5
        self.attn_drop = check_probability("attn_drop", attn_drop)
        self.proj_drop = nn.Dropout(check_probability("proj_drop", proj_drop))
        self.reference = bool(reference)

    supports_key_padding_mask: ClassVar[bool] = False
    contiguous_tokens: ClassVar[bool] = True  # False: a map may arrive as a transposed view
    # True: the projections take a large NCHW map's channel-first view and write the output
    # in its layout (`_layout.linear_in` / `linear_out`), so the map costs no extra copy
    fuses_layout: ClassVar[bool] = False

    def forward(
        self,
        x: Tensor,
        hw: tuple[int, int] | None = None,
        key_padding_mask: Tensor | None = None,
    ) -> Tensor:
        """`key_padding_mask` (optional, mechanisms with `supports_key_padding_mask`):
        bool (B, H, W) or (B, N), True on the real pixels of each sample of a batch of
        differently sized images padded to one size; no query attends a padded pixel (the
        outputs at padded pixels are computed but meaningless)."""
        tokens, h, w, is_map = to_tokens(x, hw, self.dim, contiguous=False)
        if is_map and self.contiguous_tokens and not self._keeps_view(tokens):
            tokens = tokens.contiguous()
        kwargs = {}
        if key_padding_mask is not None:
            kwargs["key_padding_mask"] = self._check_key_padding_mask(key_padding_mask, tokens)
        out = self.forward_tokens(tokens, h, w, **kwargs)
        return to_map_like(out, x) if is_map else out

    def _keeps_view(self, tokens: Tensor) -> bool:
        return self.fuses_layout and not self.reference and channel_first(tokens)

    def _check_key_padding_mask(self, mask: Tensor, tokens: Tensor) -> Tensor:
        """-> (B, N) bool on the tokens' device; ValueError for a wrong mask."""
        if not self.supports_key_padding_mask:
            raise ValueError(f"attention {self.name!r} does not support key_padding_mask")
        b, n, _ = tokens.shape
        if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
            raise ValueError("key_padding_mask must be a bool tensor (True = real pixel)")
        if mask.shape[0] != b or mask[0].numel() != n or mask.dim() not in (2, 3):
            raise ValueError(
                f"key_padding_mask shape={tuple(mask.shape)} must be (B, H, W) or (B, N) "
                f"with B={b}, N={n}"
            )
        mask = mask.reshape(b, n).to(tokens.device)
        if not bool(mask.any(dim=1).all()):
            raise ValueError("key_padding_mask leaves a sample with no real pixel")
        return mask

    def forward_tokens(self, x: Tensor, h: int, w: int) -> Tensor:
        """(B, N, C) tokens of an H x W map -> (B, N, C)."""
        raise NotImplementedError

    def macs(self, h: int, w: int) -> int:
        """Multiply-accumulates of the matmul, linear and conv ops for one H x W image, as
        computed (padding, zero channels and masked keys included)."""
        raise NotImplementedError

    def useful_macs(self, h: int, w: int) -> int:
        """The part of `macs(h, w)` that the mechanism's math needs: padded positions,
        zero-padded channels and keys computed only to be masked are left out."""
        return self.macs(h, w)

    @property
    def attn_dropout_p(self) -> float:
        return self.attn_drop if self.training else 0.0

    def settings(self) -> dict[str, Any]:
        """The mechanism's own key settings (shown by repr and the benchmark)."""
        return {}

    def extra_repr(self) -> str:
        items = {"dim": self.dim, "num_heads": self.num_heads, **self.settings()}
        if self.reference:
            items["reference"] = True
        return ", ".join(f"{k}={v}" for k, v in items.items())

    def split_heads(self, t: Tensor) -> Tensor:
        """(B, L, h*d) -> (B, h, L, d)."""
        b, n, _ = t.shape
        return t.reshape(b, n, self.num_heads, -1).transpose(1, 2)

    def split_qkv(self, qkv: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(B, L, 3*h*d) packed q|k|v -> three (B, h, L, d)."""
        b, n, _ = qkv.shape
        q, k, v = qkv.reshape(b, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        return q, k, v

    def split_kv(self, kv: Tensor, heads: int | None = None) -> tuple[Tensor, Tensor]:
        """(B, L, 2*h*d) packed k|v -> two (B, h, L, d) views (no split op, so no guard on
        L while exporting)."""
        b, n, _ = kv.shape
        heads = self.num_heads if heads is None else heads
        k, v = kv.view(b, n, 2, heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return k, v

    @staticmethod
    def merge_heads(t: Tensor) -> Tensor:
        """(B, h, L, d) -> (B, L, h*d)."""
        b, h, n, d = t.shape
        if tracing():  # decompositions after tracing may change t's strides: no view
            return t.transpose(1, 2).clone(memory_format=torch.contiguous_format).view(b, n, h * d)
        return t.transpose(1, 2).reshape(b, n, h * d)


def to_map_like(tokens: Tensor, like: Tensor) -> Tensor:
    """(B, N, C) tokens -> a (B, C, H, W) map shaped as `like`, in its memory format:
    contiguous for an NCHW input, channels_last (no copy) otherwise."""
    b, c, h, w = like.shape
    out = tokens.reshape(b, h, w, c).permute(0, 3, 1, 2)
    return out.contiguous() if like.is_contiguous() else out


def as_map(x: Tensor, h: int, w: int) -> Tensor:
    """(B, N, C) tokens -> (B, C, H, W)."""
    return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], h, w)


def as_tokens(x: Tensor) -> Tensor:
    """(B, C, H, W) -> (B, N, C)."""
    return x.flatten(2).transpose(1, 2)


def new_tensor_like(x: Tensor, data: Any) -> Tensor:
    """A constant made with x's dtype and device (positional tensors never default to fp32)."""
    return torch.as_tensor(data, dtype=x.dtype, device=x.device)
