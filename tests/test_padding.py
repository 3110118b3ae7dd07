"""Padding never leaks: every mechanism that pads is compared with an oracle written here that
has no padding at all.

The oracles compute, in fp64 and with the module's own weights, attention over exactly the
real pixels that each output pixel may see by the mechanism's definition (its window, its
Swin region, its grid position class, its in-map neighbourhood, the real pixels of a pooled
or reduced patch). A padded position does not exist in them, so any weight a padded key
takes, any padded value counted in an average, any missing or extra mask shows up as a
difference, whatever the module writes into its padding.

The receptive-field tests check the same sets through autograd on odd sizes: the gradient
of one output pixel is non-zero on every pixel it may see and exactly zero elsewhere.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from helpers import DIM, build, randomize_, rel_err

import lightattn

F64 = torch.float64
TOL = 1e-10  # fp64: the oracles differ from the fast paths by rounding only
TOL_REF = 1e-10  # the reference paths keep fp64 too


# -- the sets each output pixel may see, built from the definitions -------------------------


def round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def pixels(h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column of each of the N = H*W pixels, row-major."""
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    return ys.flatten(), xs.flatten()


def same(labels: torch.Tensor) -> torch.Tensor:
    """(N,) labels -> (N, N) bool, True where query and key carry the same label."""
    return labels[:, None] == labels[None, :]


def window_sets(h: int, w: int, ws: int, shift: bool = False) -> torch.Tensor:
    """(N, N) bool [query, key] for Swin windows of size ws (a side shorter than ws is one
    window) on the map padded at the bottom/right; with `shift`, the padded map is rolled by
    -ws//2 along each side longer than ws and two pixels of one rolled window see each other
    only if both or neither wrapped around (the Swin regions). Real pixels only."""
    wh, ww = min(ws, h), min(ws, w)
    hp, wp = round_up(h, wh), round_up(w, ww)
    sh = ws // 2 if shift and h > ws else 0
    sw = ws // 2 if shift and w > ws else 0
    y, x = pixels(h, w)
    ry, rx = (y - sh) % hp, (x - sw) % wp  # where each pixel lands in the rolled padded map
    return same(ry // wh) & same(rx // ww) & same(y < sh) & same(x < sw)


def grid_sets(h: int, w: int, g: int) -> torch.Tensor:
    """(N, N) bool: MaxViT grid, g x g groups of the padded map; a group is a position class,
    i.e. pixels spaced Hp/g rows and Wp/g columns apart. Real pixels only."""
    gh, gw = min(g, h), min(g, w)
    step_h, step_w = round_up(h, gh) // gh, round_up(w, gw) // gw
    y, x = pixels(h, w)
    return same(y % step_h) & same(x % step_w)


def box_sets(h: int, w: int, radius: int) -> torch.Tensor:
    """(N, N) bool: the in-map pixels of the (2r+1)² neighbourhood centred on the query."""
    y, x = pixels(h, w)
    return ((y[:, None] - y[None, :]).abs() <= radius) & ((x[:, None] - x[None, :]).abs() <= radius)


def acmix_sets(h: int, w: int, att: str, kernel_att: int) -> torch.Tensor:
    """ACmix attention: the in-map k_att x k_att neighbourhood (sliding) or the window."""
    if att == "sliding":
        return box_sets(h, w, kernel_att // 2)
    return window_sets(h, w, kernel_att)


def window_means(h: int, w: int, wh: int, ww: int) -> torch.Tensor:
    """(M, N) averaging matrix: row m is the mean of the real pixels of window m (row-major
    windows of the padded map)."""
    y, x = pixels(h, w)
    win = (y // wh) * (-(-w // ww)) + x // ww
    onehot = F.one_hot(win, -(-h // wh) * -(-w // ww)).T.to(F64)
    return onehot / onehot.sum(1, keepdim=True)


# -- plain attention ------------------------------------------------------------------------


def tokens(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(2).transpose(1, 2)


def heads(t: torch.Tensor, n: int) -> torch.Tensor:
    """(B, L, n*d) -> (B, n, L, d)."""
    b, length, c = t.shape
    return t.view(b, length, n, c // n).transpose(1, 2)


def merge(t: torch.Tensor) -> torch.Tensor:
    b, n, length, d = t.shape
    return t.transpose(1, 2).reshape(b, length, n * d)


def softmax_attention(q, k, v, scale, allowed=None, bias=None):
    """softmax(q kᵀ·scale + bias) v over the keys `allowed` (N, N) lets each query see."""
    logits = q @ k.transpose(-2, -1) * scale
    if bias is not None:
        logits = logits + bias
    if allowed is not None:
        logits = logits.masked_fill(~allowed, float("-inf"))
    return logits.softmax(-1) @ v


def as_output(t: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(B, N, C) -> (B, C, H, W)."""
    return t.transpose(1, 2).reshape(t.shape[0], -1, h, w)


def fp64(module):
    return randomize_(module).to(F64).eval()


def fp32(module):
    return randomize_(module).eval()


def both_paths(module):
    """(module, tolerance) for the fast path and for a reference-path copy."""
    ref = copy.deepcopy(module)
    ref.reference = True
    return [(module, TOL), (ref, TOL_REF)]


def relative_bias(table: torch.Tensor, h: int, w: int, ws: int, allowed) -> torch.Tensor:
    """(heads, N, N) Swin bias: table[(dy + ws-1)(2ws-1) + dx + ws-1] with (dy, dx) the
    query-minus-key offset (inside a window, also in the rolled map)."""
    y, x = pixels(h, w)
    dy, dx = y[:, None] - y[None, :], x[:, None] - x[None, :]
    index = torch.where(allowed, (dy + ws - 1) * (2 * ws - 1) + dx + ws - 1, 0)
    return table[index].permute(2, 0, 1)


# -- oracles ----------------------------------------------------------------------------------


def qkv_block_oracle(m, x, allowed, bias=None):
    """Modules with a packed qkv Linear and a proj Linear (window, grid)."""
    _, _, h, w = x.shape
    q, k, v = (
        heads(t, m.num_heads) for t in F.linear(tokens(x), m.qkv.weight, m.qkv.bias).chunk(3, -1)
    )
    out = softmax_attention(q, k, v, m.head_dim**-0.5, allowed, bias)
    return as_output(F.linear(merge(out), m.proj.weight, m.proj.bias), h, w)


def window_oracle(m, x):
    _, _, h, w = x.shape
    allowed = window_sets(h, w, m.window_size, m.shift)
    bias = None
    if m.rel_pos_table is not None:
        bias = relative_bias(m.rel_pos_table, h, w, m.window_size, allowed)
    return qkv_block_oracle(m, x, allowed, bias)


def hilo_oracle(m, x):
    """Hi-Fi: attention over the real pixels of the window; Lo-Fi: every pixel attends the
    means of the real pixels of every window. Channels [Hi-Fi, Lo-Fi]."""
    _, _, h, w = x.shape
    t, scale = tokens(x), m.head_dim**-0.5
    wh, ww = min(m.window_size, h), min(m.window_size, w)
    q, k, v = (
        heads(p, m.hifi_heads) for p in F.linear(t, m.hifi_qkv.weight, m.hifi_qkv.bias).chunk(3, -1)
    )
    hifi = softmax_attention(q, k, v, scale, window_sets(h, w, m.window_size))
    hifi = F.linear(merge(hifi), m.hifi_proj.weight, m.hifi_proj.bias)
    pooled = window_means(h, w, wh, ww) @ t  # (B, M, C)
    q = heads(F.linear(t, m.lofi_q.weight, m.lofi_q.bias), m.lofi_heads)
    k, v = (
        heads(p, m.lofi_heads)
        for p in F.linear(pooled, m.lofi_kv.weight, m.lofi_kv.bias).chunk(2, -1)
    )
    lofi = F.linear(merge(softmax_attention(q, k, v, scale)), m.lofi_proj.weight, m.lofi_proj.bias)
    return as_output(torch.cat([hifi, lofi], -1), h, w)


def sra_reduced_oracle(m, x):
    """(B, Nr, C): each r x r patch cropped to the map; the conv applied to the crop with the
    matching part of its kernel (missing pixels weigh nothing), or the crop's mean."""
    _, _, h, w = x.shape
    r, rows = m.sr_ratio, []
    for top in range(0, h, r):
        for left in range(0, w, r):
            patch = x[:, :, top : top + r, left : left + r]
            if m.reduction == "avg":
                rows.append(patch.mean(dim=(2, 3)))
            else:
                kernel = m.sr.weight[:, :, : patch.shape[2], : patch.shape[3]]
                rows.append(torch.einsum("bchw,ochw->bo", patch, kernel) + m.sr.bias)
    reduced = torch.stack(rows, dim=1)
    if m.reduction == "conv":
        reduced = F.layer_norm(reduced, (m.dim,), m.norm.weight, m.norm.bias, m.norm.eps)
    return reduced


def sra_oracle(m, x):
    _, _, h, w = x.shape
    q = heads(F.linear(tokens(x), m.q.weight, m.q.bias), m.num_heads)
    reduced = sra_reduced_oracle(m, x)
    k, v = (heads(t, m.num_heads) for t in F.linear(reduced, m.kv.weight, m.kv.bias).chunk(2, -1))
    out = softmax_attention(q, k, v, m.head_dim**-0.5)
    return as_output(F.linear(merge(out), m.proj.weight, m.proj.bias), h, w)


def acmix_attention_oracle(m, x):
    """proj(rate_att · attention) (call with rate_conv = 0): logits
    d^-½ · q_i · (k_j + pos((c_j - c_i) / R)) over the in-map neighbours (sliding) or the real
    pixels of the window (window)."""
    _, _, h, w = x.shape
    q, k, v = (
        heads(t, m.num_heads) for t in F.linear(tokens(x), m.qkv.weight, m.qkv.bias).chunk(3, -1)
    )
    allowed = acmix_sets(h, w, m.att, m.kernel_att)
    y, xs = pixels(h, w)
    delta = torch.stack([y[None, :] - y[:, None], xs[None, :] - xs[:, None]], -1).to(F64)
    rel = F.linear(delta / max(1, m.kernel_att // 2), m.pos.weight)  # (N, N, d)
    scale = m.head_dim**-0.5
    bias = torch.einsum("bhid,ijd->bhij", q, rel) * scale
    out = m.rate_att * merge(softmax_attention(q, k, v, scale, allowed, bias))
    return as_output(F.linear(out, m.proj.weight, m.proj.bias), h, w)


# -- oracle tests -------------------------------------------------------------------------------

SIZES_WS = [((13, 19), 7), ((5, 9), 7), ((13, 19), 4), ((5, 9), 4)]


@pytest.mark.parametrize("hw, ws", SIZES_WS, ids=lambda v: str(v))
@pytest.mark.parametrize("shift", [False, True], ids=["plain", "shift"])
@pytest.mark.parametrize("rel_pos_bias", [False, True], ids=["nobias", "bias"])
def test_window_is_attention_over_the_real_pixels_of_its_window(hw, ws, shift, rel_pos_bias):
    m = fp64(build("window", window_size=ws, shift=shift, rel_pos_bias=rel_pos_bias))
    x = torch.randn(2, DIM, *hw, dtype=F64)
    with torch.no_grad():
        expected = window_oracle(m, x)
        for module, tol in both_paths(m):
            assert rel_err(module(x), expected) < tol


@pytest.mark.parametrize("hw, g", [((13, 19), 4), ((13, 19), 7), ((5, 9), 4)], ids=str)
def test_grid_is_attention_over_the_real_pixels_of_its_position_class(hw, g):
    m = fp64(build("grid", grid_size=g))
    x = torch.randn(2, DIM, *hw, dtype=F64)
    with torch.no_grad():
        expected = qkv_block_oracle(m, x, grid_sets(*hw, g))
        for module, tol in both_paths(m):
            assert rel_err(module(x), expected) < tol


@pytest.mark.parametrize("hw", [(13, 19), (5, 9)], ids=str)
@pytest.mark.parametrize("ws", [2, 3, 4])
def test_hilo_windows_and_pooled_keys_use_real_pixels_only(hw, ws):
    m = fp64(build("hilo", DIM, 4, window_size=ws, alpha=0.5))
    assert m.hifi_heads == 2 and m.lofi_heads == 2
    x = torch.randn(2, DIM, *hw, dtype=F64) + 2.0  # far from 0: a padded zero in a mean shows
    with torch.no_grad():
        expected = hilo_oracle(m, x)
        for module, tol in both_paths(m):
            assert rel_err(module(x), expected) < tol


@pytest.mark.parametrize("hw", [(13, 19), (5, 9)], ids=str)
@pytest.mark.parametrize("sr", [2, 3])
@pytest.mark.parametrize("reduction", ["conv", "avg"])
def test_sra_partial_patches_reduce_their_real_pixels_only(hw, sr, reduction):
    m = fp64(build("sra", sr_ratio=sr, reduction=reduction))
    x = torch.randn(2, DIM, *hw, dtype=F64) + 2.0
    with torch.no_grad():
        reduced = sra_reduced_oracle(m, x)
        expected = sra_oracle(m, x)
        for module, tol in both_paths(m):
            assert rel_err(module.reduce(tokens(x), *hw), reduced) < tol
            assert rel_err(module(x), expected) < tol


@pytest.mark.parametrize("hw", [(13, 19), (5, 9)], ids=str)
@pytest.mark.parametrize(
    "att, kernel_att", [("sliding", 5), ("sliding", 7), ("window", 4), ("window", 7)]
)
def test_acmix_attends_exactly_the_in_map_neighbours(hw, att, kernel_att):
    m = fp64(build("acmix", att=att, kernel_att=kernel_att))
    with torch.no_grad():
        m.rate_conv.zero_()
    x = torch.randn(2, DIM, *hw, dtype=F64)
    with torch.no_grad():
        expected = acmix_attention_oracle(m, x)
        for module, tol in both_paths(m):
            assert rel_err(module(x), expected) < tol


@pytest.mark.parametrize(
    "inner, kwargs",
    [("window", {"window_size": 4, "shift": True}), ("hilo", {"window_size": 3, "alpha": 0.5})],
)
def test_position_with_a_padded_inner_mechanism(inner, kwargs):
    m = fp64(build("position", DIM, 4, inner=inner, **kwargs))
    x = torch.randn(2, DIM, 13, 19, dtype=F64)
    oracle = window_oracle if inner == "window" else hilo_oracle
    with torch.no_grad():
        expected = m.gamma * oracle(m.inner, x) + x
        for module, tol in both_paths(m):
            assert rel_err(module(x), expected) < tol


# -- receptive fields through autograd ------------------------------------------------------


def probes(h: int, w: int) -> torch.Tensor:
    """Output pixels to probe (row-major indices): all of a small map; on a larger one the
    rows and columns 0, 1, 3 (wrapped by a shift, the first unwrapped one), the middle and
    the last two (partial, padded windows and classes)."""
    if h * w <= 64:
        return torch.arange(h * w)
    rows = sorted({0, 1, 3, h // 2, h - 2, h - 1})
    cols = sorted({0, 1, 3, w // 2, w - 2, w - 1})
    return torch.tensor([r * w + c for r in rows for c in cols])


def receptive_fields(m, h: int, w: int, channels=slice(None)) -> torch.Tensor:
    """(P, N) bool [probed output pixel, input pixel]: True where the input pixel changes the
    output pixel's `channels`. One batch item per probe (batch items are independent).
    fp32: masked weights and their gradients are exact zeros in any precision, and fp64
    convolutions take a slow path on CPU."""
    index = probes(h, w)
    p = len(index)
    x = torch.randn(1, m.dim, h, w).expand(p, -1, -1, -1).clone().requires_grad_()
    out = m(x).flatten(2)[torch.arange(p), :, index][:, channels]  # (P, C')
    weight = torch.randn(out.shape[1])
    (out * weight).sum().backward()
    return x.grad.abs().sum(dim=1).flatten(1) > 0


def assert_fields(seen: torch.Tensor, sets: torch.Tensor, h: int, w: int) -> None:
    """`seen` (P, N) against the probed rows of the (N, N) `sets`."""
    index = probes(h, w)
    expected = sets[index]
    missing = [(index[i].item(), j) for i, j in (expected & ~seen).nonzero().tolist()]
    extra = [(index[i].item(), j) for i, j in (seen & ~expected).nonzero().tolist()]
    assert not missing and not extra, (
        f"(output, input) pixel pairs missing {missing[:5]}, extra {extra[:5]}"
    )


FIELD_SIZES = [(13, 19), (5, 9)]


@pytest.mark.parametrize("hw", FIELD_SIZES, ids=str)
@pytest.mark.parametrize("ws", [4, 7])
@pytest.mark.parametrize("shift", [False, True], ids=["plain", "shift"])
def test_window_receptive_fields(hw, ws, shift):
    m = fp32(build("window", window_size=ws, shift=shift))
    assert_fields(receptive_fields(m, *hw), window_sets(*hw, ws, shift), *hw)


@pytest.mark.parametrize("hw", FIELD_SIZES, ids=str)
@pytest.mark.parametrize("g", [3, 4])
def test_grid_receptive_fields(hw, g):
    m = fp32(build("grid", grid_size=g))
    assert_fields(receptive_fields(m, *hw), grid_sets(*hw, g), *hw)


@pytest.mark.parametrize("hw", FIELD_SIZES, ids=str)
@pytest.mark.parametrize("ws", [2, 4])
def test_hilo_receptive_fields(hw, ws):
    m = fp32(build("hilo", DIM, 4, window_size=ws, alpha=0.5))
    hifi, lofi = slice(0, m.hifi_dim), slice(m.hifi_dim, None)
    assert_fields(receptive_fields(m, *hw, hifi), window_sets(*hw, ws), *hw)
    everything = torch.ones(hw[0] * hw[1], hw[0] * hw[1], dtype=torch.bool)
    assert_fields(receptive_fields(m, *hw, lofi), everything, *hw)


@pytest.mark.parametrize("hw", FIELD_SIZES, ids=str)
@pytest.mark.parametrize("att, kernel_att", [("sliding", 5), ("window", 4)])
def test_acmix_receptive_fields(hw, att, kernel_att):
    """Attention set ∪ the k_conv x k_conv in-map neighbourhood of the convolution path."""
    m = fp32(build("acmix", att=att, kernel_att=kernel_att))
    attention = acmix_sets(*hw, att, kernel_att)
    seen = receptive_fields(m, *hw)
    assert_fields(seen, attention | box_sets(*hw, m.kernel_conv // 2), *hw)


# -- every mechanism is accounted for ---------------------------------------------------------

# Mechanisms that never pad the pixel map, and why (zero borders that are part of a
# convolution's or grid_sample's definition are not padding of the attention).
NEVER_PADS = {
    "mhsa": "global attention over the N real tokens",
    "axial": "rows and columns of the map itself",
    "nystrom": "landmarks are means of unequal token segments, nothing is padded",
    "linear": "global sums over the N real tokens",
    "castling": "global linear term; the depthwise conv's zero border is the convolution's",
    "deformable": "keys are bilinear samples of the map (zeros outside: grid_sample's "
    "definition); the offset conv's zero border is the convolution's",
    "position": "the N x N form pads q/k channels with zeros (logits unchanged, fast path "
    "vs reference in the contract); with inner=<name> the inner oracle applies (tested above)",
}
WITH_ORACLE = {"window", "grid", "hilo", "sra", "acmix"}


@pytest.mark.parametrize("name", lightattn.list_attention())
def test_every_mechanism_has_an_unpadded_oracle_or_never_pads(name):
    assert (name in WITH_ORACLE) != (name in NEVER_PADS), (
        f"{name!r}: add an oracle on the real pixels to tests/test_padding.py, or list it in "
        "NEVER_PADS with the reason"
    )
