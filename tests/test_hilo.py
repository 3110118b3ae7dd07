"""HiLo attention: limits (window, mhsa, sra), padding, pooling oracle, cost, receptive field."""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import build, randomize_, rel_err

import lightattn
from lightattn.layers import _padding
from lightattn.layers._blocks import block_layout

C, HEADS = 16, 2


def both_paths(module):
    ref = copy.deepcopy(module)
    ref.reference = True
    return [module, ref]


def copy_linear_(dst, src, rows=slice(None)):
    with torch.no_grad():
        dst.weight.copy_(src.weight[rows])
        dst.bias.copy_(src.bias[rows])


@pytest.mark.parametrize("hw", [(8, 8), (13, 19), (3, 2)], ids=str)
@pytest.mark.parametrize("ws", [2, 3])
def test_alpha_zero_is_window_attention(hw, ws):
    hilo = randomize_(build("hilo", C, HEADS, window_size=ws, alpha=0.0)).eval()
    assert hilo.lofi_heads == 0 and hilo.lofi_q is None
    window = build("window", C, HEADS, window_size=ws, rel_pos_bias=False).eval()
    copy_linear_(window.qkv, hilo.hifi_qkv)
    copy_linear_(window.proj, hilo.hifi_proj)
    x = torch.randn(2, C, *hw)
    with torch.no_grad():
        expected = window(x)
        for module in both_paths(hilo):
            assert rel_err(module(x), expected) < 1e-5


@pytest.mark.parametrize("hw", [(6, 6), (13, 19)], ids=str)
def test_window_size_one_is_mhsa(hw):
    hilo = randomize_(build("hilo", C, HEADS, window_size=1, alpha=0.3)).eval()
    assert hilo.lofi_heads == HEADS and hilo.hifi_qkv is None
    mhsa = build("mhsa", C, HEADS).eval()
    copy_linear_(hilo.lofi_q, mhsa.qkv, slice(0, C))
    copy_linear_(hilo.lofi_kv, mhsa.qkv, slice(C, 3 * C))
    copy_linear_(hilo.lofi_proj, mhsa.proj)
    x = torch.randn(2, C, *hw)
    with torch.no_grad():
        expected = mhsa(x)
        for module in both_paths(hilo):
            assert rel_err(module(x), expected) < 1e-5


@pytest.mark.parametrize("hw", [(5, 7), (2, 3)], ids=str)
def test_window_covering_the_map_is_mhsa(hw):
    """A side shorter than ws is one window: Hi-Fi on a small map is full attention."""
    hilo = randomize_(build("hilo", C, HEADS, window_size=8, alpha=0.0)).eval()
    mhsa = build("mhsa", C, HEADS).eval()
    copy_linear_(mhsa.qkv, hilo.hifi_qkv)
    copy_linear_(mhsa.proj, hilo.hifi_proj)
    x = torch.randn(2, C, *hw)
    with torch.no_grad():
        assert rel_err(hilo(x), mhsa(x)) < 1e-5


@pytest.mark.parametrize("hw", [(8, 8), (13, 19)], ids=str)
@pytest.mark.parametrize("ws", [2, 3])
def test_alpha_one_is_sra_with_average_pooling(hw, ws):
    if "sra" not in lightattn.list_attention():
        pytest.skip("sra is not registered")
    hilo = randomize_(build("hilo", C, HEADS, window_size=ws, alpha=1.0)).eval()
    assert hilo.hifi_heads == 0 and hilo.hifi_qkv is None
    sra = build("sra", C, HEADS, sr_ratio=ws, reduction="avg").eval()
    copy_linear_(sra.q, hilo.lofi_q)
    copy_linear_(sra.kv, hilo.lofi_kv)
    copy_linear_(sra.proj, hilo.lofi_proj)
    x = torch.randn(2, C, *hw)
    with torch.no_grad():
        expected = sra(x)
        for module in both_paths(hilo):
            assert rel_err(module(x), expected) < 1e-5


def explicit_lofi(module, x, ws):
    """The Lo-Fi channels computed from scratch: per-window means with slicing loops."""
    b, c, h, w = x.shape
    means = []
    for i in range(0, h, ws):
        for j in range(0, w, ws):
            means.append(x[:, :, i : i + ws, j : j + ws].mean(dim=(2, 3)))
    pooled = torch.stack(means, dim=1)  # (B, M, C)
    tokens = x.flatten(2).transpose(1, 2)
    heads, d = module.lofi_heads, module.head_dim
    q = module.lofi_q(tokens).view(b, -1, heads, d).transpose(1, 2)
    k, v = module.lofi_kv(pooled).view(b, -1, 2, heads, d).permute(2, 0, 3, 1, 4)
    weights = (q @ k.transpose(-2, -1) * d**-0.5).softmax(dim=-1)
    out = (weights @ v).transpose(1, 2).reshape(b, h * w, -1)
    return module.lofi_proj(out)


@pytest.mark.parametrize("hw", [(13, 19), (7, 8)], ids=str)
@pytest.mark.parametrize("ws", [2, 4])
def test_lofi_pools_only_real_pixels(hw, ws):
    """A partial border window is the mean of its real pixels (zero padding counted in the
    average, as in the published detection code, would fail this)."""
    hilo = randomize_(build("hilo", C, 4, window_size=ws, alpha=0.5)).eval()
    x = torch.randn(2, C, *hw) + 3.0  # far from zero, so counting padding shows
    with torch.no_grad():
        expected = explicit_lofi(hilo, x, ws)
        for module in both_paths(hilo):
            out = module(x).flatten(2).transpose(1, 2)[..., hilo.hifi_dim :]
            assert rel_err(out, expected) < 1e-5


@pytest.mark.parametrize("reference", [False, True])
@pytest.mark.parametrize("ws", [2, 4])
def test_padding_never_leaks(monkeypatch, reference, ws):
    hilo = randomize_(build("hilo", C, 4, window_size=ws, alpha=0.5, reference=reference)).eval()
    x = torch.randn(2, C, 13, 19)
    assert block_layout(13, 19, (ws, ws)).padded  # the padding is really exercised
    with torch.no_grad():
        clean = hilo(x)
        monkeypatch.setattr(_padding, "PAD_FILL", 1e4)
        filled = hilo(x)
    assert rel_err(filled, clean) < 1e-6


def paper_macs(h, w, c, heads, ws, alpha):
    """LITv2's own HiLo.flops() formula (MACs) for H, W divisible by ws."""
    n, d = h * w, c // heads
    cl = int(heads * alpha) * d
    ch = c - cl
    hifi = 3 * n * c * ch + (n // ws**2) * (ws**2) ** 2 * ch * 2 + n * ch * ch
    lofi = n * c * cl + (n // ws**2) * c * cl * 2 + n * cl * (n // ws**2) * 2 + n * cl * cl
    return hifi + lofi


@pytest.mark.parametrize("c, heads", [(64, 4), (768, 12)])
@pytest.mark.parametrize("hw", [(14, 14), (28, 28), (14, 28)], ids=str)
@pytest.mark.parametrize("alpha", [0.9, 0.5])
def test_macs_equal_the_published_formula(c, heads, hw, alpha):
    module = lightattn.create_attention("hilo", c, heads, window_size=2, alpha=alpha)
    assert module.hifi_heads == heads - int(heads * alpha)
    assert module.macs(*hw) == paper_macs(*hw, c, heads, 2, alpha)


def test_macs_limits_equal_window_and_mhsa():
    for hw in [(14, 14), (13, 19)]:
        alpha0 = build("hilo", C, HEADS, window_size=4, alpha=0.0)
        window = build("window", C, HEADS, window_size=4, rel_pos_bias=False)
        assert alpha0.macs(*hw) == window.macs(*hw)
        ws1 = build("hilo", C, HEADS, window_size=1)
        assert ws1.macs(*hw) == build("mhsa", C, HEADS).macs(*hw)


def test_head_split_follows_the_paper():
    module = lightattn.create_attention("hilo", 768, 12)  # LITv2 defaults: ws 2, alpha 0.9
    assert (module.lofi_heads, module.hifi_heads) == (10, 2)
    assert module.hifi_qkv.out_features == 3 * 128 and module.hifi_proj.in_features == 128
    assert module.lofi_q.out_features == 640 and module.lofi_kv.out_features == 1280
    assert module.lofi_proj.out_features == 640
    assert lightattn.create_attention("hilo", 768, 12, window_size=1).lofi_heads == 12


@pytest.mark.parametrize("pixel", [(5, 9), (12, 18), (0, 0)], ids=str)
def test_hifi_receptive_field_is_the_window(pixel):
    ws, (h, w) = 4, (13, 19)
    hilo = randomize_(build("hilo", C, 4, window_size=ws, alpha=0.5)).eval()
    assert hilo.hifi_heads == 2
    x = torch.randn(1, C, h, w, requires_grad=True)
    out = hilo(x)
    i, j = pixel
    out[0, 0, i, j].backward()  # channel 0 is a Hi-Fi channel
    reach = x.grad[0].abs().sum(dim=0) > 0
    inside = torch.zeros(h, w, dtype=torch.bool)
    top, left = i // ws * ws, j // ws * ws
    inside[top : top + ws, left : left + ws] = True
    assert reach[inside].all()
    assert not reach[~inside].any()
    x.grad = None
    hilo(x)[0, -1, i, j].backward()  # a Lo-Fi channel sees the whole map
    assert (x.grad[0].abs().sum(dim=0) > 0).all()


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"alpha": -0.1}, "alpha=-0.1"),
        ({"alpha": 1.5}, "alpha=1.5"),
        ({"alpha": "half"}, "alpha='half'"),
        ({"alpha": True}, "alpha=True"),
        ({"window_size": 0}, "window_size=0"),
        ({"window_size": 2.5}, "window_size=2.5"),
    ],
)
def test_bad_arguments_raise(kwargs, words):
    with pytest.raises(ValueError, match=words):
        lightattn.create_attention("hilo", C, HEADS, **kwargs)


@pytest.mark.parametrize("hw", [(1, 1), (1, 5), (3, 2), (13, 19)], ids=str)
def test_train_mode_runs_on_any_size(hw):
    hilo = randomize_(build("hilo", C, 4, window_size=2, attn_drop=0.1, proj_drop=0.1)).train()
    y = hilo(torch.randn(2, C, *hw))
    assert y.shape == (2, C, *hw) and torch.isfinite(y).all()
