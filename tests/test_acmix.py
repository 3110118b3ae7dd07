"""ACmix: shift-kernel conv, receptive fields of both paths, masking, small maps, bf16."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from helpers import DIM, HEADS, build, grads, randomize_, rel_err
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from lightattn.layers import _padding


def zero_filled_shift(t, dy, dx):
    """out[..., y, x] = t[..., y + dy, x + dx], zero outside the map."""
    h, w = t.shape[-2:]
    out = torch.zeros_like(t)
    ys, yd = slice(max(dy, 0), h + min(dy, 0)), slice(max(-dy, 0), h + min(-dy, 0))
    xs, xd = slice(max(dx, 0), w + min(dx, 0)), slice(max(-dx, 0), w + min(-dx, 0))
    out[..., yd, xd] = t[..., ys, xs]
    return out


@pytest.mark.parametrize("kernel_conv", [3, 5])
def test_shift_initialised_conv_is_a_sum_of_zero_filled_shifts(kernel_conv):
    attn = build("acmix", kernel_conv=kernel_conv)
    kc, d, r = kernel_conv, DIM // HEADS, kernel_conv // 2
    f = torch.randn(2, d * kc * kc, 6, 7)
    with torch.no_grad():
        out = attn.dep_conv(f)
    expected = torch.zeros(2, d, 6, 7)
    for i in range(kc * kc):
        expected += zero_filled_shift(f[:, i :: kc * kc], i // kc - r, i % kc - r)
    # output channel o belongs to group o // heads (head channel g)
    torch.testing.assert_close(out, expected.repeat_interleave(HEADS, dim=1))


def receptive_field(attn, hw, pixel):
    x = torch.randn(1, DIM, *hw, requires_grad=True)
    attn(x)[0, :, pixel[0], pixel[1]].sum().backward()
    return x.grad[0].abs().sum(0) > 0


def box(hw, pixel, r):
    out = torch.zeros(hw, dtype=torch.bool)
    out[max(pixel[0] - r, 0) : pixel[0] + r + 1, max(pixel[1] - r, 0) : pixel[1] + r + 1] = True
    return out


@pytest.mark.parametrize("kernel_conv", [3, 5])
@pytest.mark.parametrize("pixel", [(5, 6), (0, 12)])
def test_rate_att_zero_is_a_pure_convolution(kernel_conv, pixel):
    attn = randomize_(build("acmix", kernel_conv=kernel_conv, kernel_att=5)).eval()
    with torch.no_grad():
        attn.rate_att.zero_()
    seen = receptive_field(attn, (11, 13), pixel)
    assert torch.equal(seen, box((11, 13), pixel, kernel_conv // 2))


@pytest.mark.parametrize("kernel_att", [3, 5, 7])
@pytest.mark.parametrize("pixel", [(6, 7), (0, 0), (12, 18), (3, 15)])
@pytest.mark.parametrize("reference", [False, True])
def test_sliding_attention_receptive_field_is_the_window(kernel_att, pixel, reference):
    attn = build("acmix", kernel_att=kernel_att, reference=reference)
    attn = randomize_(attn).eval()
    with torch.no_grad():
        attn.rate_conv.zero_()
    seen = receptive_field(attn, (13, 19), pixel)
    assert torch.equal(seen, box((13, 19), pixel, kernel_att // 2))


@pytest.mark.parametrize("pixel", [(1, 1), (5, 9)])
def test_window_attention_receptive_field_is_its_window(pixel):
    attn = randomize_(build("acmix", att="window", kernel_att=4)).eval()
    with torch.no_grad():
        attn.rate_conv.zero_()
    seen = receptive_field(attn, (7, 10), pixel)
    expected = torch.zeros(7, 10, dtype=torch.bool)
    y0, x0 = pixel[0] // 4 * 4, pixel[1] // 4 * 4
    expected[y0 : y0 + 4, x0 : x0 + 4] = True
    assert torch.equal(seen, expected)


def dense_oracle(attn, x):
    """Attention path from dense N x N logits with an explicit neighbourhood mask."""
    b, c, h, w = x.shape
    heads, d, r = HEADS, c // HEADS, attn.kernel_att // 2
    qkv = F.linear(x.flatten(2).transpose(1, 2), attn.qkv.weight, attn.qkv.bias)
    q, k, v = qkv.view(b, h * w, 3, heads, d).permute(2, 0, 3, 1, 4)
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    coords = torch.stack([ys.flatten(), xs.flatten()], -1).float()
    delta = coords[None, :, :] - coords[:, None, :]  # c_j - c_i
    rel = F.linear(delta / max(1, r), attn.pos.weight)  # (N, N, d)
    logits = (q @ k.transpose(-2, -1) + torch.einsum("bhid,ijd->bhij", q, rel)) * d**-0.5
    near = (delta.abs() <= r).all(-1)
    out = logits.masked_fill(~near, float("-inf")).softmax(-1) @ v
    return out.transpose(1, 2).reshape(b, h * w, c)


@pytest.mark.parametrize("hw", [(1, 1), (2, 2), (5, 6), (9, 11), (3, 16)])
@pytest.mark.parametrize("kernel_att", [3, 5])
@pytest.mark.parametrize("reference", [False, True])
def test_sliding_attention_matches_dense_masked_oracle(hw, kernel_att, reference):
    attn = randomize_(build("acmix", kernel_att=kernel_att, reference=reference)).eval()
    x = torch.randn(2, DIM, *hw)
    with torch.no_grad():
        qkv = attn.qkv(x.flatten(2).transpose(1, 2))
        path = attn._sliding_reference if reference else attn._sliding_fast
        got = path(qkv, *hw)
        assert rel_err(got, dense_oracle(attn, x)) < 1e-5


def test_keys_outside_the_map_never_leak(monkeypatch):
    attn = randomize_(build("acmix", kernel_att=5)).eval()
    x = torch.randn(2, DIM, 9, 11)
    with torch.no_grad():
        y = attn(x)
        monkeypatch.setattr(_padding, "PAD_FILL", 1e4)
        torch.testing.assert_close(attn(x), y)
        ref = copy.deepcopy(attn)
        ref.reference = True
        torch.testing.assert_close(ref(x), y, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("att", ["sliding", "window"])
@pytest.mark.parametrize("hw", [(1, 1), (2, 2), (6, 6), (9, 13)])
def test_fast_matches_reference(att, hw):
    fast = randomize_(build("acmix", att=att, kernel_att=5, kernel_conv=5), std=0.2).eval()
    ref = copy.deepcopy(fast)
    ref.reference = True
    x = torch.randn(2, DIM, *hw)
    y_fast, g_fast = grads(fast, x)
    y_ref, g_ref = grads(ref, x)
    assert rel_err(y_fast, y_ref) < 2e-5
    for a, b in zip(g_fast, g_ref, strict=True):
        assert rel_err(a, b) < 2e-5 or (a.abs().max() < 1e-7 and b.abs().max() < 1e-7)


@pytest.mark.parametrize("att", ["sliding", "window"])
@pytest.mark.parametrize("hw", [(1, 1), (2, 2), (11, 9)])
def test_small_maps_and_bf16(att, hw):
    attn = randomize_(build("acmix", att=att), std=0.1).eval()
    x = torch.randn(2, DIM, *hw)
    with torch.no_grad():
        y32 = attn(x)
        y16 = copy.deepcopy(attn).to(torch.bfloat16)(x.to(torch.bfloat16))
    assert y16.dtype == torch.bfloat16 and torch.isfinite(y16).all()
    assert rel_err(y16.float(), y32) < 0.05


@pytest.mark.parametrize(
    "kwargs", [{"att": "window"}, {"kernel_conv": 5, "kernel_att": 3}, {"kernel_att": 9}]
)
@pytest.mark.parametrize("hw", [(7, 7), (13, 19)])
def test_macs_match_flop_counter_for_other_settings(kwargs, hw):
    attn = build("acmix", **kwargs).eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), counter:
        attn(torch.randn(1, DIM, *hw))
    counted = counter.get_total_flops() / 2
    assert abs(attn.macs(*hw) - counted) <= 0.05 * counted


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"kernel_att": 0}, "kernel_att=0"),
        ({"kernel_att": 6}, "kernel_att=6"),
        ({"kernel_conv": 4}, "kernel_conv=4"),
        ({"kernel_conv": -1}, "kernel_conv=-1"),
        ({"att": "global"}, "att='global'"),
    ],
)
def test_bad_arguments_raise(kwargs, words):
    with pytest.raises(ValueError, match=words):
        build("acmix", **kwargs)


def test_even_window_size_is_fine_for_window_attention():
    attn = build("acmix", att="window", kernel_att=4).eval()
    with torch.no_grad():
        assert attn(torch.randn(1, DIM, 5, 9)).shape == (1, DIM, 5, 9)
