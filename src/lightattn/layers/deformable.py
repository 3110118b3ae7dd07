"""Deformable attention (DAT, DAT++): keys and values sampled at learned offsets of a grid."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._attend import attend
from ._base import AttentionBase, as_map
from ._checks import check_choice, check_positive_int
from ._layout import linear_in, linear_out
from ._registry import register_attention


def check_size_pair(name: str, value: object) -> tuple[int, int]:
    """An int or an (H, W) pair of positive ints -> (H, W)."""
    if isinstance(value, (tuple, list)) and len(value) == 2:
        h, w = value
        return check_positive_int(f"{name}[0]", h), check_positive_int(f"{name}[1]", w)
    size = check_positive_int(name, value)
    return size, size


def cell_centres(n: int, count: int, device: torch.device, scale: float = 1.0) -> Tensor:
    """(count,) fp32 centres of the first `count` of n equal cells spanning [-1, 1] (the
    align_corners=False pixel centres), times `scale`; cells past n continue the spacing."""
    steps = torch.arange(count, dtype=torch.float32, device=device)
    return ((steps * 2 + 1) / n - 1) * scale


def centre_grid(
    hw: tuple[int, int],
    count: tuple[int, int],
    device: torch.device,
    scale: tuple[float, float] = (1.0, 1.0),
) -> Tensor:
    """(count_h, count_w, 2) fp32 grid of cell centres of an H x W grid in grid_sample's
    (x, y) order, x times scale[0] and y times scale[1]."""
    ys = cell_centres(hw[0], count[0], device, scale[1])
    xs = cell_centres(hw[1], count[1], device, scale[0])
    ys, xs = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([xs, ys], dim=-1)


# Query-key pairs (of one batch item and offset group) per chunk of the rpb attention. A
# chunk's sampling grid (2 floats a pair) and bias (heads / n_groups floats a pair) stay a few
# MB: in cache, and under glibc's mmap threshold, so their memory is reused from call to call
# rather than page-faulted afresh. At 2**20 the 56x56 map (batch 8, stride 2) runs in chunks
# of 2 images x 11 query rows; larger chunks measured slower, smaller ones no faster.
RPB_CHUNK_PAIRS = 2**20


def rpb_chunk_shape(b: int, g: int, h: int, w: int, nk: int, threads: int) -> tuple[int, int]:
    """(batch items, query rows) per chunk of the rpb attention over B x H rows of W queries
    and nk keys: about RPB_CHUNK_PAIRS pairs, at least one row and, where the batch has
    them, enough batch items to give every thread a share of grid_sample (it parallelises
    over its batch dimension only)."""
    per_row = g * w * nk
    min_items = min(b, -(-threads // g))
    rows = max(1, min(h, RPB_CHUNK_PAIRS // (min_items * per_row)))
    items = max(min_items, min(b, RPB_CHUNK_PAIRS // (rows * per_row)))
    return items, rows


def key_mask(hk: int, wk: int, count: tuple[int, int], device: torch.device) -> Tensor:
    """(count_h * count_w,) bool: True for the keys of the first hk rows and wk columns."""
    rows = torch.arange(count[0], device=device) < hk
    cols = torch.arange(count[1], device=device) < wk
    return (rows[:, None] & cols[None, :]).flatten()


def bilinear_sample_reference(img: Tensor, grid: Tensor) -> Tensor:
    """Readable `grid_sample(img, grid, "bilinear", padding_mode="zeros", align_corners=False)`.

    img (B, C, H, W), grid (B, Hk, Wk, 2) in (x, y) order -> (B, C, Hk, Wk).
    """
    b, c, h, w = img.shape
    px = ((grid[..., 0] + 1) * w - 1) / 2  # continuous pixel index, 0 = centre of pixel 0
    py = ((grid[..., 1] + 1) * h - 1) / 2
    x0, y0 = px.detach().floor(), py.detach().floor()
    flat = img.flatten(2)
    out = torch.zeros(b, c, px[0].numel(), dtype=img.dtype, device=img.device)
    for xi in (x0, x0 + 1):
        for yi in (y0, y0 + 1):
            weight = (1 - (px - xi).abs()) * (1 - (py - yi).abs())
            inside = (xi >= 0) & (xi <= w - 1) & (yi >= 0) & (yi <= h - 1)
            index = (yi.clamp(0, h - 1) * w + xi.clamp(0, w - 1)).long().flatten(1)
            values = flat.gather(2, index[:, None].expand(-1, c, -1))
            out = out + values * (weight * inside).flatten(1)[:, None]
    return out.view(b, c, *grid.shape[1:3])


@register_attention("deformable")
class DeformableAttention(AttentionBase):
    """Deformable attention: every query attends to keys and values sampled from the map at a
    reference grid moved by learned, input-dependent offsets.

    Xia et al., "Vision Transformer with Deformable Attention", CVPR 2022 (DAT) and "DAT++",
    2023. (B, C, H, W) -> (B, C, H, W), or (B, N, C) with hw -> (B, N, C).

    - q, k, v and output projections are 1x1 (Linear on tokens).
    - Offsets: the channels of q are split into `n_groups` groups; one offset network shared
      by the groups (as in DAT): depthwise k x k conv with stride `stride` (padding k // 2,
      giving a key grid of ceil(H / stride) x ceil(W / stride)) -> LayerNorm -> GELU ->
      1x1 to 2 channels (dx, dy), no bias, zero-initialised (offsets start at 0).
    - Reference points: the centres of Hk x Wk equal cells of the map in [-1, 1]
      coordinates with align_corners=False semantics (stride 1: the pixel centres).
    - `offset_range_factor` f >= 0: offset = tanh(raw) · f · (1/Wk, 1/Hk), i.e. at most f/2
      key-grid cells (f·stride/2 pixels); f < 0: unbounded, positions clamped to [-1, 1].
    - Keys/values: bilinear `grid_sample` (zeros outside, align_corners=False) of each group
      of the input at the positions, then the k and v projections; softmax over all keys.
    - `pos="rpb"` (DAT++): a learned (2·Ht-1) x (2·Wt-1) table per head, Ht x Wt = `rpb_size`,
      sampled bilinearly at the query-key displacement measured in fractions of the map (so
      any runtime resolution works; at H x W = rpb_size, stride 1 and zero offsets, pixel
      displacements hit the table entries exactly); displacements beyond the table use its
      border. `pos="dwc"`: depthwise 3x3 conv of q added to the attention output.
      `pos="none"`: no position term.
    - The fast path builds the rpb bias, and its sampling grid, a chunk of images x query
      rows at a time (`RPB_CHUNK_PAIRS` query-key pairs, a few MB) and attends that chunk's
      queries with it: memory O(chunk · Nk), not the B·heads·N·Nk floats of the whole bias
      (the reference path, and torch.export, build the whole bias; same values).

    Reference points, offsets, sampling positions and rpb displacements are fp32 whatever the
    input dtype (in bf16 only 176 of 224 pixel centres are distinct); the map and the table
    are sampled in fp32 and the samples and the bias cast to the input dtype.

    `keep_positions=True` (constructor argument, or the attribute set later): after each
    forward, `last_positions` and `last_offsets` hold the sampling positions and offsets,
    detached, fp32, shape (B, n_groups, Hk, Wk, 2) in grid_sample (x, y) order, normalised to
    [-1, 1] (align_corners=False); positions = reference points + offsets. Otherwise (the
    default), and while torch.export traces, nothing is stored and they stay as they were
    (None on a new module).

    Export: `torch.export` with dynamic H and W works for any H, W >= 1; with stride > 1 the
    traced program adds one masked row and column of keys (see `extra_keys`): its output
    equals the eager one, at the cost of (Hk+1)·(Wk+1) keys instead of Hk·Wk.

    MACs (Nk = Hk·Wk keys): 2NC² (q, out) + 2·Nk·C² (k, v) + 2·N·Nk·C (attention)
    + Nk·C·k² + 2·Nk·C (offset net) [+ 9NC for dwc].
    """

    last_positions: Tensor | None
    last_offsets: Tensor | None

    # an NCHW map arrives as a transposed view: `sample` reads it back as the map itself, and
    # the q projection makes the one copy (contiguous tokens would cost a copy more, and
    # turning them back into a map makes torch.export guard on W, refusing a dynamic W)
    contiguous_tokens: ClassVar[bool] = False

    fuses_layout = True

    def __init__(
        self,
        dim: int,
        num_heads: int | None = None,
        n_groups: int = 1,
        stride: int = 2,
        offset_range_factor: float = 2.0,
        offset_kernel_size: int = 5,
        pos: str = "rpb",
        rpb_size: int | tuple[int, int] = 14,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        reference: bool = False,
        keep_positions: bool = False,
    ) -> None:
        super().__init__(dim, num_heads, attn_drop, proj_drop, reference)
        self.keep_positions = bool(keep_positions)
        self.n_groups = check_positive_int("n_groups", n_groups)
        if self.num_heads % n_groups:
            raise ValueError(f"num_heads={self.num_heads} is not divisible by n_groups={n_groups}")
        self.stride = check_positive_int("stride", stride)
        if isinstance(offset_range_factor, bool) or not isinstance(
            offset_range_factor, (int, float)
        ):
            raise ValueError(f"offset_range_factor={offset_range_factor!r} must be a number")
        self.offset_range_factor = float(offset_range_factor)
        self.offset_kernel_size = check_positive_int("offset_kernel_size", offset_kernel_size)
        if offset_kernel_size % 2 == 0:
            raise ValueError(f"offset_kernel_size={offset_kernel_size} must be odd")
        self.pos = check_choice("pos", pos, ("rpb", "dwc", "none"))
        self.rpb_size = check_size_pair("rpb_size", rpb_size)
        group_dim = dim // n_groups
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        k = offset_kernel_size
        self.offset_conv = nn.Conv2d(group_dim, group_dim, k, stride, k // 2, groups=group_dim)
        self.offset_norm = nn.LayerNorm(group_dim)
        self.offset_proj = nn.Linear(group_dim, 2, bias=False)
        nn.init.zeros_(self.offset_proj.weight)
        self.rpb_table = self.dwc = None
        if pos == "rpb":
            th, tw = self.rpb_size
            table = torch.zeros(self.num_heads, 2 * th - 1, 2 * tw - 1)
            self.rpb_table = nn.Parameter(nn.init.trunc_normal_(table, std=0.01))
        elif pos == "dwc":
            self.dwc = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.last_positions = None
        self.last_offsets = None

    def settings(self) -> dict[str, Any]:
        out = {
            "n_groups": self.n_groups,
            "stride": self.stride,
            "offset_range_factor": self.offset_range_factor,
            "offset_kernel_size": self.offset_kernel_size,
            "pos": self.pos,
        }
        if self.pos == "rpb":
            out["rpb_size"] = self.rpb_size
        return out

    def key_grid(self, h: int, w: int) -> tuple[int, int]:
        s = self.stride  # ceil without negative operands (ONNX integer division truncates)
        return (h + s - 1) // s, (w + s - 1) // s

    def extra_keys(self) -> int:
        """Rows and columns of masked keys added to the key grid: 1 while torch.export traces
        a stride > 1, else 0. torch.export guards every traced size that may be 1, and
        Hk = ceil(H / stride) is 1 on small maps; Hk + 1 never is, so the exported program
        serves every H, W >= 1."""
        return int(self.stride > 1 and torch.compiler.is_exporting())

    def offsets(self, q: Tensor, h: int, w: int, extra: int = 0) -> Tensor:
        """(B, N, C) queries -> (B*G, Hk + extra, Wk + extra, 2) fp32 offsets in normalised
        (x, y) units; `extra` rows and columns come from zero padding past the map."""
        b, g = q.shape[0], self.n_groups
        q_map = as_map(q, h, w).reshape(b * g, -1, h, w)
        if extra:
            q_map = F.pad(q_map, (0, extra * self.stride, 0, extra * self.stride))
        feat = self.offset_conv(q_map).permute(0, 2, 3, 1)  # (B*G, Hk, Wk, C/G)
        raw = self.offset_proj(F.gelu(self.offset_norm(feat))).float()
        if self.offset_range_factor < 0:
            return raw
        hk, wk = self.key_grid(h, w)
        bounded = raw.tanh() * self.offset_range_factor
        return torch.stack([bounded[..., 0] / wk, bounded[..., 1] / hk], dim=-1)

    def positions(self, offsets: Tensor, hk: int, wk: int) -> Tensor:
        """Cell centres of the Hk x Wk key grid + offsets (fp32), clamped to the map when the
        offsets are unbounded."""
        pos = centre_grid((hk, wk), offsets.shape[1:3], offsets.device) + offsets
        return pos.clamp(-1, 1) if self.offset_range_factor < 0 else pos

    def sample(self, x: Tensor, h: int, w: int, pos: Tensor) -> Tensor:
        """(B, N, C) input sampled per group at pos (B*G, Hk, Wk, 2) -> (B, Nk, C) in x's
        dtype; the sampling runs in fp32."""
        b, _, c = x.shape
        x_map = as_map(x, h, w).reshape(b * self.n_groups, -1, h, w).float()
        pos = pos.float()
        if self.reference:
            sampled = bilinear_sample_reference(x_map, pos)
        else:
            sampled = F.grid_sample(x_map, pos, mode="bilinear", align_corners=False)
        return sampled.reshape(b, c, -1).transpose(1, 2).to(x.dtype)

    def rpb(self, h: int, w: int, pos: Tensor) -> Tensor:
        """(B, heads, N, Nk) fp32 bias: the table sampled at query-minus-key displacements.

        The whole bias at once: the reference path (and torch.export) use it; the fast path
        builds the same values a chunk of query rows at a time (`rpb_rows`)."""
        bg, hk, wk, _ = pos.shape
        pos = pos.float()
        th, tw = self.rpb_size
        # a displacement of 2/Ht (one pixel at the construction size) is one table entry;
        # scaling both ends first saves a pass over the (B*G, N, Nk, 2) displacement tensor
        sx, sy = tw / (2 * tw - 1), th / (2 * th - 1)
        queries = centre_grid((h, w), (h, w), pos.device, (sx, sy)).view(1, h * w, 1, 2)
        keys = torch.stack([pos[..., 0] * sx, pos[..., 1] * sy], dim=-1)
        grid = queries - keys.view(bg, 1, hk * wk, 2)
        table = self.rpb_table.float().view(self.n_groups, -1, 2 * th - 1, 2 * tw - 1)
        table = table.repeat(bg // self.n_groups, 1, 1, 1)  # (B*G, heads/G, 2Ht-1, 2Wt-1)
        bias = F.grid_sample(
            table, grid, mode="bilinear", padding_mode="border", align_corners=False
        )
        return bias.view(bg // self.n_groups, self.num_heads, h * w, hk * wk)

    def rpb_displacements(self, h: int, w: int, pos: Tensor) -> tuple[Tensor, Tensor]:
        """The rpb grid's two coordinates, separately: query column minus key x
        (B*G, W, Nk) and query row minus key y (B*G, H, Nk), fp32, in the units of `rpb`'s
        grid (its (query, key) entry is (x[query column, key], y[query row, key]))."""
        pos = pos.float().flatten(1, 2)  # (B*G, Nk, 2)
        th, tw = self.rpb_size
        sx, sy = tw / (2 * tw - 1), th / (2 * th - 1)
        xs = cell_centres(w, w, pos.device, sx)
        ys = cell_centres(h, h, pos.device, sy)
        gx = xs[None, :, None] - (pos[..., 0] * sx)[:, None, :]
        gy = ys[None, :, None] - (pos[..., 1] * sy)[:, None, :]
        return gx, gy

    def rpb_rows(
        self, gx: Tensor, gy: Tensor, threads: int, planes: Tensor | None = None
    ) -> Tensor:
        """(b, heads, R*W, Nk) fp32 bias of R query rows of b batch items from their
        displacements gx (b*G, W, Nk) and gy (b*G, R, Nk): `rpb` restricted to those rows
        (the same grid, the same grid_sample, so the same values). `planes`: a buffer
        (2, b*G, R' >= R, W, Nk) whose x plane already holds gx, to write the y plane in."""
        bg, rows, nk = gy.shape
        w, g = gx.shape[1], self.n_groups
        th, tw = self.rpb_size
        table = self.rpb_table.float().view(g, -1, 2 * th - 1, 2 * tw - 1)
        shape = (bg, rows, w, nk)
        # the grid as x and y planes seen as (..., 2): 3x faster to write than interleaved
        # pairs (and 5x faster copied plane by plane than by torch.stack), and grid_sample
        # reads it as fast
        if planes is None:
            planes = gx.new_empty(2, *shape)
            planes[0].copy_(gx[:, None].expand(shape))
        else:
            planes = planes[:, :, :rows]
        planes[1].copy_(gy[:, :, None].expand(shape))
        grid = planes.permute(1, 2, 3, 4, 0)
        if bg >= threads or rows == 1:
            table = table.repeat(bg // g, 1, 1, 1)  # (b*G, heads/G, 2Ht-1, 2Wt-1)
            bias = F.grid_sample(
                table, grid.flatten(1, 2), mode="bilinear",
                padding_mode="border", align_corners=False,
            )  # fmt: skip
            return bias.view(bg // g, self.num_heads, rows * w, nk)
        # too few batch items to share among the threads: rows join the batch dimension (the
        # one grid_sample parallelises over), then move behind the heads
        table = table[None, :, None].expand(bg // g, g, rows, *table.shape[1:])
        bias = F.grid_sample(
            table.reshape(bg * rows, *table.shape[3:]), grid.flatten(0, 1),
            mode="bilinear", padding_mode="border", align_corners=False,
        )  # fmt: skip
        bias = bias.view(bg // g, g, rows, -1, w * nk).transpose(2, 3)
        return bias.reshape(bg // g, self.num_heads, rows * w, nk)

    def attend_rpb(self, q: Tensor, k: Tensor, v: Tensor, pos: Tensor, h: int, w: int) -> Tensor:
        """Attention with the rpb bias for q (B, heads, N, d), k, v (B, heads, Nk, d) and the
        key positions pos (B*G, Hk, Wk, 2) -> (B, heads, N, d), a chunk of batch items and
        query rows at a time (`rpb_chunk_shape`): no (B, heads, N, Nk) bias, nor an
        (N, Nk, 2) grid, exists at once."""
        b, g, nk = q.shape[0], self.n_groups, k.shape[2]
        gx, gy = self.rpb_displacements(h, w, pos)
        threads = torch.get_num_threads()
        items, rows = rpb_chunk_shape(b, g, h, w, nk, threads)
        scale, drop = self.scale, self.attn_dropout_p
        out = []
        # without autograd, the row chunks of a batch chunk share one grid buffer: its x
        # plane (the same for every row) is written once
        reuse = rows < h and not (torch.is_grad_enabled() and gx.requires_grad)
        for b0 in range(0, b, items):
            b1 = min(b, b0 + items)
            batch = slice(b0 * g, b1 * g)
            planes = None
            if reuse:
                planes = gx.new_empty(2, (b1 - b0) * g, rows, w, nk)
                planes[0].copy_(gx[batch, None].expand(planes.shape[1:]))
            for r0 in range(0, h, rows):
                r1 = min(h, r0 + rows)
                bias = self.rpb_rows(gx[batch], gy[batch, r0:r1], threads, planes)
                qc, kc, vc = q[b0:b1, :, r0 * w : r1 * w], k[b0:b1], v[b0:b1]
                out.append(attend(qc, kc, vc, scale=scale, bias=bias, dropout_p=drop))
        if len(out) == 1:
            return out[0]
        per_item = -(-h // rows)
        rows_cat = [torch.cat(out[i : i + per_item], dim=2) for i in range(0, len(out), per_item)]
        return torch.cat(rows_cat, dim=0)

    def key_positions(self, q: Tensor, h: int, w: int) -> tuple[Tensor, Tensor | None]:
        """(B*G, Hk', Wk', 2) fp32 sampling positions and the (Hk'·Wk',) mask of the real
        keys, None when Hk', Wk' = Hk, Wk (see `extra_keys`)."""
        hk, wk = self.key_grid(h, w)
        extra = self.extra_keys()
        offsets = self.offsets(q, h, w, extra)
        pos = self.positions(offsets, hk, wk)
        if self.keep_positions and not torch.compiler.is_exporting():
            b = q.shape[0]
            self.last_offsets = offsets.detach().view(b, self.n_groups, hk, wk, 2)
            self.last_positions = pos.detach().view(b, self.n_groups, hk, wk, 2)
        if not extra:
            return pos, None
        return pos, key_mask(hk, wk, pos.shape[1:3], pos.device)

    def forward_tokens(self, x: Tensor, h: int, w: int) -> Tensor:
        q = linear_in(self.q, x)
        pos, valid = self.key_positions(q, h, w)
        k, v = self.kv(self.sample(x, h, w, pos)).chunk(2, dim=-1)
        qh, kh, vh = self.split_heads(q), self.split_heads(k), self.split_heads(v)
        if self.rpb_table is not None and not self.reference and not torch.compiler.is_exporting():
            out = self.attend_rpb(qh, kh, vh, pos, h, w)
        else:  # the reference path; torch.export too (the chunk loop is over traced sizes)
            bias = self.rpb(h, w, pos).to(x.dtype) if self.rpb_table is not None else None
            out = attend(
                qh, kh, vh, scale=self.scale, mask=valid, bias=bias,
                dropout_p=self.attn_dropout_p, reference=self.reference,
            )  # fmt: skip
        out = self.merge_heads(out)
        if self.dwc is not None:
            out = out + self.dwc(as_map(q, h, w)).flatten(2).transpose(1, 2)
        return self.proj_drop(linear_out(self.proj, out, x))

    def macs(self, h: int, w: int) -> int:
        hk, wk = self.key_grid(h, w)
        n, nk, c = h * w, hk * wk, self.dim
        offset_net = nk * c * self.offset_kernel_size**2 + 2 * nk * c
        total = 2 * n * c * c + 2 * nk * c * c + 2 * n * nk * c + offset_net
        if self.dwc is not None:
            total += 9 * n * c
        return total
