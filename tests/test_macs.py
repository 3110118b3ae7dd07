"""MACs branch by branch: each branch of a mechanism, counted alone by FlopCounterMode, equals
its documented formula written out here by hand.

The contract test compares `macs()` with the counted total; a total is dominated by the
projections at small widths, so a wrong attention, offset-network or convolution term could
hide in it (or two wrong terms could cancel). Here every branch must match on its own, at
two widths and on divisible and padded sizes. Eval mode; SDPA under the math backend, where
FlopCounterMode sees its matmuls.
"""

from __future__ import annotations

import pytest
import torch
from helpers import build, randomize_
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

DIMS = [(16, 2), (64, 4)]
SIZES = [(7, 7), (13, 19), (28, 28)]


def ceil_div(n: int, d: int) -> int:
    return -(-n // d)


def count(module, fn) -> tuple[int, dict[str, int]]:
    """MACs of fn() in total and per direct submodule of `module` (by attribute name)."""
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), counter:
        fn()
    total = counter.get_total_flops()
    assert total % 2 == 0
    prefix = f"{type(module).__name__}."
    per_module = {
        name[len(prefix) :]: sum(flops.values()) // 2
        for name, flops in counter.get_flop_counts().items()
        if name.startswith(prefix) and "." not in name[len(prefix) :]
    }
    return total // 2, per_module


def ids(value) -> str:
    return "x".join(map(str, value)) if isinstance(value, tuple) else str(value)


# -- HiLo: Hi-Fi and Lo-Fi -----------------------------------------------------------------------


@pytest.mark.parametrize("dim, heads", DIMS, ids=ids)
@pytest.mark.parametrize("hw", SIZES, ids=ids)
@pytest.mark.parametrize("ws, alpha", [(2, 0.9), (3, 0.5), (4, 0.5)], ids=ids)
def test_hilo_hifi_and_lofi_each_match_their_formula(dim, heads, hw, ws, alpha):
    """Hi-Fi 3NC·Ch + 2·Np·L·Ch + N·Ch² (Np the padded token count, L = wh·ww), Lo-Fi
    NC·Cl + 2MC·Cl + 2NM·Cl + N·Cl² (M windows): LITv2's formula with the padded windows.
    Fast path (the contract checks the reference path's total)."""
    m = build("hilo", dim, heads, window_size=ws, alpha=alpha).eval()
    h, w = hw
    n, c, d = h * w, dim, dim // heads
    ch, cl = m.hifi_heads * d, m.lofi_heads * d
    assert ch > 0 and cl > 0
    wh, ww = min(ws, h), min(ws, w)
    windows = ceil_div(h, wh) * ceil_div(w, ww)
    padded = windows * wh * ww
    hifi = 3 * n * c * ch + 2 * padded * wh * ww * ch + n * ch * ch
    lofi = n * c * cl + 2 * windows * c * cl + 2 * n * windows * cl + n * cl * cl
    x = torch.randn(1, n, dim)
    assert count(m, lambda: m.hifi(x, h, w))[0] == hifi
    assert count(m, lambda: m.lofi(x, h, w))[0] == lofi
    assert count(m, lambda: m(x, hw=hw))[0] == hifi + lofi
    assert m.macs(h, w) == hifi + lofi


# -- deformable: the offset network and the rest ---------------------------------------------

DEFORMABLE = [
    {},
    {"stride": 1, "pos": "dwc", "offset_kernel_size": 3},
    {"n_groups": 2, "stride": 3, "pos": "none", "offset_kernel_size": 7},
]


@pytest.mark.parametrize("dim, heads", DIMS, ids=ids)
@pytest.mark.parametrize("hw", SIZES, ids=ids)
@pytest.mark.parametrize("kwargs", DEFORMABLE, ids=["default", "s1-dwc-k3", "g2-s3-k7"])
@pytest.mark.parametrize("reference", [False, True], ids=["fast", "reference"])
def test_deformable_offset_network_and_attention_each_match(dim, heads, hw, kwargs, reference):
    """Offset net Nk·C·k² (depthwise conv, stride r) + 2·Nk·C (1x1 to 2 channels); the rest
    2NC² (q, out) + 2·Nk·C² (k, v) + 2·N·Nk·C (attention) [+ 9NC dwc]; Nk = ⌈H/r⌉·⌈W/r⌉."""
    m = randomize_(build("deformable", dim, heads, reference=reference, **kwargs)).eval()
    h, w = hw
    n, c, k = h * w, dim, m.offset_kernel_size
    nk = ceil_div(h, m.stride) * ceil_div(w, m.stride)
    offset_net = nk * c * k * k + 2 * nk * c
    rest = 2 * n * c * c + 2 * nk * c * c + 2 * n * nk * c + (9 * n * c if m.pos == "dwc" else 0)
    x = torch.randn(1, n, dim)
    assert count(m, lambda: m.offsets(m.q(x), h, w))[0] == offset_net + n * c * c  # with q
    total, parts = count(m, lambda: m(x, hw=hw))
    assert parts["offset_conv"] + parts["offset_proj"] == offset_net
    assert total - offset_net == rest
    assert m.macs(h, w) == total


# -- ACmix: the attention path and the convolution path ----------------------------------------

ACMIX = [
    {"att": "sliding", "kernel_att": 7, "kernel_conv": 3},
    {"att": "sliding", "kernel_att": 3, "kernel_conv": 5},
    {"att": "window", "kernel_att": 7, "kernel_conv": 3},
    {"att": "window", "kernel_att": 4, "kernel_conv": 3},
]


def acmix_attention_geometry(h: int, w: int, att: str, ka: int) -> tuple[int, int]:
    """(Np, L) of the documented attention cost 2·Np·L·C: the map padded to ka x ka tiles
    (a side shorter than ka is one tile) and the keys per query block: the window (wh·ww),
    or on the sliding fast path the halo, the tile plus ka // 2 on each side along which
    the map has more than one tile."""
    th, tw = min(ka, h), min(ka, w)
    hp, wp = ceil_div(h, th) * th, ceil_div(w, tw) * tw
    if att == "window":
        return hp * wp, th * tw
    r = ka // 2
    return hp * wp, (th + (2 * r if hp > th else 0)) * (tw + (2 * r if wp > tw else 0))


@pytest.mark.parametrize("dim, heads", DIMS, ids=ids)
@pytest.mark.parametrize("hw", SIZES, ids=ids)
@pytest.mark.parametrize(
    "kwargs", ACMIX, ids=lambda kw: f"{kw['att']}{kw['kernel_att']}-c{kw['kernel_conv']}"
)
def test_acmix_attention_and_convolution_paths_each_match(dim, heads, hw, kwargs):
    """Convolution path 3NC·kc² (fc) + NC·kc⁴ (grouped dep_conv); shared qkv 3NC², proj NC²;
    attention path 2·Np·L·C (`acmix_attention_geometry`) plus the position Linear(2, d) on the L key
    coordinates (2·L·d). Fast path (the reference path's count is the contract's xfail)."""
    m = randomize_(build("acmix", dim, heads, **kwargs)).eval()
    h, w = hw
    n, c, d, kc = h * w, dim, dim // heads, m.kernel_conv
    total, parts = count(m, lambda: m(torch.randn(1, n, dim), hw=hw))
    assert parts["fc"] == 3 * n * c * kc * kc
    assert parts["dep_conv"] == n * c * kc**4
    assert parts["qkv"] == 3 * n * c * c and parts["proj"] == n * c * c
    padded, keys = acmix_attention_geometry(h, w, m.att, m.kernel_att)
    assert parts["pos"] == 2 * keys * d
    assert total - sum(parts.values()) == 2 * padded * keys * c
    assert m.macs(h, w) == total


# -- Castling: the linear term -------------------------------------------------------------------


@pytest.mark.parametrize("dim, heads", DIMS, ids=ids)
@pytest.mark.parametrize("hw", SIZES, ids=ids)
@pytest.mark.parametrize("kernel_size", [3, 5])
@pytest.mark.parametrize("reference", [False, True], ids=["fast", "reference"])
def test_castling_linear_term_matches(dim, heads, hw, kernel_size, reference):
    """Eval mode (no auxiliary branch): qkv 3NC², proj NC², dwconv NC·k², linear term
    2NCd (k̂ᵀv then q̂(k̂ᵀv)) on the fast path and 2N²C (the explicit N x N kernel) on the
    reference path."""
    m = randomize_(build("castling", dim, heads, kernel_size=kernel_size, reference=reference))
    m.eval()
    h, w = hw
    n, c, d = h * w, dim, dim // heads
    total, parts = count(m, lambda: m(torch.randn(1, n, dim), hw=hw))
    assert parts["qkv"] == 3 * n * c * c and parts["proj"] == n * c * c
    assert parts["dwconv"] == n * c * kernel_size**2
    linear = total - sum(parts.values())
    assert linear == (2 * n * n * c if reference else 2 * n * c * d)
    assert m.macs(h, w) == total


def seen_keys(h: int, w: int, att: str, ka: int) -> int:
    """Σ over the real queries of the real keys each may see: the in-map ka x ka
    neighbourhood (sliding), or the real pixels of its window (window)."""
    if att == "sliding":
        r = ka // 2
        per_axis = [
            sum(min(side - 1, i + r) - max(0, i - r) + 1 for i in range(side)) for side in (h, w)
        ]
        return per_axis[0] * per_axis[1]
    wh, ww = min(ka, h), min(ka, w)
    rows = [min(wh, h - top) for top in range(0, h, wh)]
    cols = [min(ww, w - left) for left in range(0, w, ww)]
    return sum((r * c) ** 2 for r in rows for c in cols)


@pytest.mark.parametrize(
    "att, hw",
    [
        ("sliding", (5, 9)),
        ("sliding", (13, 19)),
        ("sliding", (28, 28)),
        ("window", (7, 7)),
        ("window", (28, 28)),
        ("window", (5, 9)),
        ("window", (13, 19)),
    ],
)
def test_acmix_useful_macs_count_only_the_keys_each_query_may_see(att, hw):
    """useful_macs = macs with the computed attention 2·Np·L·C replaced by 2·C·Σ|S(p)|,
    S(p) the in-map keys real query p may see (the acmix useful_macs docstring)."""
    m = build("acmix", att=att, kernel_att=7)
    h, w = hw
    padded, keys = acmix_attention_geometry(h, w, att, 7)
    computed = 2 * padded * keys * m.dim
    expected = m.macs(h, w) - computed + 2 * seen_keys(h, w, att, 7) * m.dim
    assert m.useful_macs(h, w) == expected


@pytest.mark.parametrize("hw", [(7, 7), (13, 19)], ids=ids)
@pytest.mark.parametrize("reference", [False, True], ids=["fast", "reference"])
def test_castling_training_branch_is_counted_while_it_runs(hw, reference):
    """Train mode, aux weight > 0: the masked softmax branch adds 2N²C (q kᵀ and S v) on top
    of the eval count; weight 0 or after switch_to_inference(): the branch is skipped and
    the count is the eval count again."""
    m = randomize_(build("castling", reference=reference))
    h, w = hw
    n, c = h * w, m.dim
    x = torch.randn(1, n, c)
    eval_macs = m.eval().macs(h, w)
    m.train()
    m.set_aux_weight(0.5)
    total, _ = count(m, lambda: m(x, hw=hw))
    assert total == eval_macs + 2 * n * n * c
    assert m.macs(h, w) == total
    m.set_aux_weight(0.0)
    assert count(m, lambda: m(x, hw=hw))[0] == eval_macs == m.macs(h, w)
    m.set_aux_weight(0.5)
    with pytest.warns(UserWarning):
        m.switch_to_inference()
    assert count(m, lambda: m(x, hw=hw))[0] == eval_macs == m.macs(h, w)
