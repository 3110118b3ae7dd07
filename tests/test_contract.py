"""The contract, tested for every registered mechanism (a new one is covered by registering)."""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import DIM, HEADS, SMALL_KWARGS, build, grads, randomize_, rel_err
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

import lightattn

NAMES = lightattn.list_attention()
SIZES = [(1, 1), (7, 7), (13, 19), (32, 48)]


def test_registry_lists_the_generic_families():
    for name in ["mhsa", "window", "axial", "grid", "sra", "nystrom", "linear"]:
        assert name in NAMES


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("hw", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_output_shape_both_layouts(name, hw):
    attn = build(name).eval()
    h, w = hw
    with torch.no_grad():
        y = attn(torch.randn(2, DIM, h, w))
        t = attn(torch.randn(2, h * w, DIM), hw=hw)
    assert y.shape == (2, DIM, h, w)
    assert t.shape == (2, h * w, DIM)
    assert torch.isfinite(y).all() and torch.isfinite(t).all()


@pytest.mark.parametrize("name", NAMES)
def test_layouts_agree(name):
    attn = randomize_(build(name)).eval()
    x = torch.randn(2, DIM, 5, 6)
    with torch.no_grad():
        y = attn(x)
        t = attn(x.flatten(2).transpose(1, 2), hw=(5, 6))
    torch.testing.assert_close(t.transpose(1, 2).reshape(y.shape), y)


@pytest.mark.parametrize("name", NAMES)
def test_every_parameter_gets_a_gradient(name):
    attn = randomize_(build(name)).train()
    _, gs = grads(attn, torch.randn(2, DIM, 9, 11))
    names = [n for n, _ in attn.named_parameters()]
    assert len(names) > 0
    for pname, g in zip(names, gs[1:], strict=True):
        assert torch.isfinite(g).all() and g.abs().sum() > 0, f"no gradient reaches {pname}"


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_batch_independence(name, mode):
    attn = randomize_(build(name)).train(mode == "train")
    x = torch.randn(3, DIM, 9, 11, requires_grad=True)
    attn(x)[0].sum().backward()
    assert x.grad[0].abs().sum() > 0
    assert torch.equal(x.grad[1:], torch.zeros_like(x.grad[1:]))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("hw", [(8, 8), (13, 19)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_fast_path_matches_reference(name, hw):
    fast = randomize_(build(name), std=0.2).eval()
    ref = copy.deepcopy(fast)
    ref.reference = True
    x = torch.randn(2, DIM, *hw)
    y_fast, g_fast = grads(fast, x)
    y_ref, g_ref = grads(ref, x)
    assert rel_err(y_fast, y_ref) < 2e-5
    for a, b in zip(g_fast, g_ref, strict=True):
        assert rel_err(a, b) < 2e-5 or (a.abs().max() < 1e-7 and b.abs().max() < 1e-7)


@pytest.mark.parametrize("name", NAMES)
def test_bf16_close_to_fp32(name):
    attn = randomize_(build(name), std=0.1).eval()
    x = torch.randn(2, DIM, 13, 19)
    with torch.no_grad():
        y32 = attn(x)
        y16 = copy.deepcopy(attn).to(torch.bfloat16)(x.to(torch.bfloat16))
    assert y16.dtype == torch.bfloat16
    assert rel_err(y16.float(), y32) < 0.05


@pytest.mark.parametrize("name", NAMES)
def test_fp16_on_a_large_map_close_to_fp32(name):
    """Sums over N tokens must not overflow fp16's 65504 on a realistic map."""
    attn = build(name).eval()
    size = 112 if name in ("castling", "linear") else 56
    x = torch.randn(1, DIM, size, size) * 3
    with torch.no_grad():
        y32 = attn(x)
        y16 = copy.deepcopy(attn).to(torch.float16)(x.to(torch.float16))
    assert y16.dtype == torch.float16 and torch.isfinite(y16).all()
    assert rel_err(y16.float(), y32) < 0.02


MACS_SIZES = [(7, 7), (13, 19), (28, 28)]  # square, odd and padded, divisible by every block
MACS_DIMS = [(16, 2), (64, 4)]  # projections dominate at 16; other terms weigh more at 64


def count_macs(attn, hw) -> int:
    """MACs of one eval forward as FlopCounterMode counts them (SDPA as math: the CPU flash
    kernel hides its FLOPs from the counter)."""
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), counter:
        attn(torch.randn(1, attn.dim, *hw))
    flops = counter.get_total_flops()
    assert flops > 0 and flops % 2 == 0
    return flops // 2


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("path", ["fast", "reference"])
@pytest.mark.parametrize("dim, heads", MACS_DIMS, ids=lambda v: str(v))
@pytest.mark.parametrize("hw", MACS_SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_macs_match_flop_counter(name, path, dim, heads, hw):
    """macs() is exact for the path that runs: every matmul, linear and conv, padding
    included. Eval mode (castling's training-only branch is not counted there)."""
    attn = build(name, dim, heads).eval()
    attn.reference = path == "reference"
    assert attn.macs(*hw) == count_macs(attn, hw)


# Mechanisms whose useful_macs() may be below macs() even on a divisible map.
WASTE_ON_ANY_SIZE = {
    "acmix": "the sliding fast path computes logits for a tile's whole halo and masks most",
    "position": "the fast path zero-pads q and k to C channels for SDPA's fused kernel",
}


@pytest.mark.parametrize("name", NAMES)
def test_useful_macs_at_most_macs(name):
    attn = build(name).eval()
    for hw in [(1, 1), (5, 9), (7, 7), (13, 19), (28, 28), (56, 28)]:
        useful, macs = attn.useful_macs(*hw), attn.macs(*hw)
        assert isinstance(useful, int) and isinstance(macs, int), (type(useful), type(macs))
        assert 0 < useful <= macs, (hw, useful, macs)
    for hw in [(28, 28), (56, 28)]:  # multiples of every block of the test settings: no padding
        if name not in WASTE_ON_ANY_SIZE:
            assert attn.useful_macs(*hw) == attn.macs(*hw), hw


@pytest.mark.parametrize("name", NAMES)
def test_repr_shows_settings(name):
    text = repr(build(name))
    assert f"dim={DIM}" in text and f"num_heads={HEADS}" in text


# -- bad input --------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_bad_inputs_raise_clear_errors(name):
    attn = build(name)
    cases = [
        (torch.randn(DIM, 4, 4), "hw"),  # 3-D without hw
        (torch.randn(2, DIM), "shape"),
        (torch.randn(1, 2, DIM, 4, 4), "shape"),
        (torch.randn(2, DIM + 1, 4, 4), "dim="),
    ]
    for x, words in cases:
        with pytest.raises(ValueError, match=words):
            attn(x)
    with pytest.raises(ValueError, match="N=16"):
        attn(torch.randn(2, 16, DIM), hw=(3, 4))
    with pytest.raises(ValueError, match="hw"):
        attn(torch.randn(2, 16, DIM), hw=(0, 16))
    with pytest.raises(ValueError, match=r"dim=30 is not divisible by num_heads=4"):
        lightattn.create_attention(name, 30, 4)
    with pytest.raises(ValueError, match="num_heads=0"):
        lightattn.create_attention(name, 16, 0)
    with pytest.raises(ValueError, match="dim=-8"):
        lightattn.create_attention(name, -8, 2)
    with pytest.raises(ValueError, match="no_such_option"):
        lightattn.create_attention(name, 16, 2, no_such_option=1)


def test_unknown_name_lists_known_and_closest():
    with pytest.raises(ValueError, match="did you mean 'window'") as err:
        lightattn.create_attention("windw", 16, 2)
    assert "mhsa" in str(err.value)


# Padding: tests/test_padding.py compares every mechanism that pads with an oracle computed on
# the real pixels only (no padding exists in it), and checks receptive fields by autograd.


@pytest.mark.parametrize("inner", [n for n in NAMES if n != "position"])
def test_position_module_wraps_every_mechanism(inner):
    """DANet's module with any registered mechanism in place of its N x N attention."""
    attn = build("position", inner=inner, **SMALL_KWARGS.get(inner, {})).eval()
    x = torch.randn(2, DIM, 13, 19)
    with torch.no_grad():
        assert torch.equal(attn(x), x)  # gamma starts at 0
    randomize_(attn, std=0.2)
    ref = copy.deepcopy(attn)
    ref.reference = True
    y_fast, g_fast = grads(attn, x)
    y_ref, g_ref = grads(ref, x)
    assert rel_err(y_fast, y_ref) < 2e-5
    assert rel_err(g_fast[0], g_ref[0]) < 2e-5
    assert attn.macs(13, 19) == build(inner).eval().macs(13, 19)  # eval: attn is in eval
