"""The building blocks of the mechanisms, for models and new mechanisms.

- `attend(q, k, v, scale=, mask=, bias=, dropout_p=, reference=)`: softmax attention
  through `scaled_dot_product_attention` (masks shaped so the fused CPU kernel runs), or
  the explicit reference computation.
- Block layouts (Swin windows, shifted windows, MaxViT grid groups) for any H x W:
  `block_layout(h, w, (bh, bw), dilated=, shift=)` describes where each token goes (cached
  per shape; built from index arithmetic while exporting), `to_blocks` / `from_blocks` move
  (B, N, C) tokens into block order and back (one gather each), `block_attention` runs
  masked softmax attention inside the blocks; `BlockLayout.mask()` is the (nB, 1, L, L)
  mask of padded keys and Swin regions.
- Plain partitions of a (B, H, W, C) map padded to a multiple of the block:
  `window_partition` / `window_reverse`, `grid_partition` / `grid_reverse`, `pad_map`,
  `valid_map`, `round_up`.
- `tracing()`: True while exporting or compiling, when shape-dependent shortcuts are off.
"""

from .layers._attend import attend
from .layers._blocks import BlockLayout, block_attention, block_layout, from_blocks, to_blocks
from .layers._padding import (
    grid_partition,
    grid_reverse,
    pad_map,
    round_up,
    tracing,
    valid_map,
    window_partition,
    window_reverse,
)

__all__ = [
    "BlockLayout",
    "attend",
    "block_attention",
    "block_layout",
    "from_blocks",
    "grid_partition",
    "grid_reverse",
    "pad_map",
    "round_up",
    "to_blocks",
    "tracing",
    "valid_map",
    "window_partition",
    "window_reverse",
]
