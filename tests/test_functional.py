"""The public functional layer, block layouts, key padding masks and contract papercuts."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch

import lightattn
import lightattn.functional as LF
from lightattn.layers import window as window_module


def swin_mask_by_definition(hp: int, wp: int, ws: int, s: int) -> torch.Tensor:
    """Swin's attn_mask built as in the paper's code: label regions of the shifted map by
    slices, partition, compare labels: (nW, L, L) bool, True = same region."""
    img = torch.zeros(hp, wp)
    label = 0
    for hs in (slice(0, -ws), slice(-ws, -s), slice(-s, None)):
        for wsl in (slice(0, -ws), slice(-ws, -s), slice(-s, None)):
            img[hs, wsl] = label
            label += 1
    win = img.view(hp // ws, ws, wp // ws, ws).permute(0, 2, 1, 3).reshape(-1, ws * ws)
    return win[:, :, None] == win[:, None, :]


@pytest.mark.parametrize(("h", "w"), [(14, 21), (8, 8), (13, 19), (5, 9)])
@pytest.mark.parametrize(("dilated", "shift"), [(False, None), (True, None), (False, (2, 2))])
def test_blocks_round_trip(h, w, dilated, shift):
    layout = LF.block_layout(h, w, (4, 4), dilated=dilated, shift=shift)
    x = torch.randn(3, h * w, 5)
    blocks = LF.to_blocks(x, layout)
    assert blocks.shape == (3 * layout.n_blocks, 16, 5)
    assert torch.equal(LF.from_blocks(blocks, layout), x)
    assert int(layout.key_valid.sum()) == h * w  # every pixel placed exactly once


@pytest.mark.parametrize(("h", "w"), [(14, 14), (13, 19)])
def test_block_order_matches_roll_and_partition(h, w):
    ws, s = 7, 3
    layout = LF.block_layout(h, w, (ws, ws), shift=(s, s))
    x = torch.randn(1, h * w, 2)
    hp, wp = LF.round_up(h, ws), LF.round_up(w, ws)
    padded = LF.pad_map(x.view(1, h, w, 2), hp - h, wp - w)
    expected = LF.window_partition(torch.roll(padded, (-s, -s), dims=(1, 2)), ws, ws)
    assert torch.equal(LF.to_blocks(x, layout), expected)


def test_shift_mask_equals_swin_definition():
    layout = LF.block_layout(14, 21, (7, 7), shift=(3, 3))
    same_region = swin_mask_by_definition(14, 21, 7, 3)
    assert torch.equal(layout.mask()[:, 0], same_region)


def test_layouts_are_cached_per_shape():
    a = LF.block_layout(13, 19, (7, 7), shift=(3, 3))
    assert LF.block_layout(13, 19, (7, 7), shift=(3, 3)) is a
    assert LF.block_layout(13, 20, (7, 7), shift=(3, 3)) is not a
    from lightattn.layers._blocks import additive_mask

    assert additive_mask(a, torch.float32) is additive_mask(a, torch.float32)


def test_block_attention_equals_attention_per_window():
    layout = LF.block_layout(8, 8, (4, 4))
    qkv = torch.randn(2, 64, 3 * 8)
    out = LF.from_blocks(
        LF.block_attention(LF.to_blocks(qkv, layout), layout, 2, scale=0.5), layout
    )
    grid = qkv.view(2, 8, 8, 24)
    window = grid[1, 4:, :4].reshape(16, 3, 2, 4).permute(1, 2, 0, 3)
    expected = LF.attend(*window, scale=0.5, reference=True).transpose(0, 1).reshape(16, 8)
    torch.testing.assert_close(out.view(2, 8, 8, 8)[1, 4:, :4].reshape(16, 8), expected)


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [("mhsa", {}), ("linear", {}), ("window", {"window_size": 4}),
     ("window", {"window_size": 4, "shift": True})],
)  # fmt: skip
@pytest.mark.parametrize(("h", "w"), [(7, 9), (5, 13)])
def test_key_padding_mask_equals_running_each_image_alone(name, kwargs, h, w):
    torch.manual_seed(0)
    module = lightattn.create_attention(name, 16, 2, **kwargs).eval()
    canvas = torch.randn(2, 16, 11, 14)
    valid = torch.zeros(2, 11, 14, dtype=torch.bool)
    valid[0, :h, :w] = True
    valid[1] = True
    with torch.no_grad():
        out = module(canvas, key_padding_mask=valid)
        alone = module(canvas[:1, :, :h, :w])
        full = module(canvas[1:])
        unmasked = module(canvas)
    torch.testing.assert_close(out[0, :, :h, :w], alone[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out[1], full[0], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(unmasked[0, :, :h, :w], alone[0], atol=1e-3)  # the mask matters


def test_key_padding_mask_errors():
    x = torch.randn(2, 16, 4, 4)
    with pytest.raises(ValueError, match="'grid' does not support key_padding_mask"):
        lightattn.create_attention("grid", 16, 2)(x, key_padding_mask=torch.ones(2, 4, 4) > 0)
    mhsa = lightattn.create_attention("mhsa", 16, 2)
    with pytest.raises(ValueError, match=r"shape=\(2, 5\)"):
        mhsa(x, key_padding_mask=torch.ones(2, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="bool"):
        mhsa(x, key_padding_mask=torch.ones(2, 16))
    with pytest.raises(ValueError, match="no real pixel"):
        mhsa(x, key_padding_mask=torch.zeros(2, 16, dtype=torch.bool))


def test_default_heads_follow_head_width_32():
    assert lightattn.create_attention("mhsa", 96).num_heads == 3  # Swin-T stage 1
    assert lightattn.create_attention("window", 64).num_heads == 2
    assert lightattn.create_attention("mhsa", 48).num_heads == 1
    with pytest.raises(ValueError, match="dim=30 is not divisible by num_heads=4"):
        lightattn.create_attention("mhsa", 30, 4)


def test_integer_types_accepted_for_sizes():
    m = lightattn.create_attention("window", np.int64(16), np.int32(2), window_size=np.int64(3))
    x = torch.randn(1, 12, 16)
    assert m(x, hw=(np.int64(3), np.int32(4))).shape == x.shape
    assert m(x, hw=torch.tensor([3, 4])).shape == x.shape
    with pytest.raises(ValueError, match="hw"):
        m(x, hw=(3.0, 4))


def test_linear_accepts_attn_drop_as_a_no_op():
    torch.manual_seed(0)
    m = lightattn.create_attention("linear", 16, 2, attn_drop=0.3).train()
    x = torch.randn(2, 16, 5, 5)
    torch.testing.assert_close(m(x), m(x))


def test_reimporting_a_mechanism_module_is_allowed():
    importlib.reload(window_module)
    assert lightattn.layers.get_attention_class("window").__module__ == window_module.__name__
    with pytest.raises(ValueError, match="already registered"):

        @lightattn.register_attention("window")
        class Other(lightattn.AttentionBase):
            pass


def test_channels_last_in_channels_last_out_without_copy():
    m = lightattn.create_attention("window", 16, 2, window_size=4).eval()
    x = torch.randn(2, 16, 8, 8)
    with torch.no_grad():
        plain = m(x)
        cl = m(x.contiguous(memory_format=torch.channels_last))
    assert plain.is_contiguous()
    assert cl.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(plain, cl)


def test_shape_caches_filled_in_inference_mode_serve_autograd():
    module = lightattn.create_attention("window", 16, 2, window_size=4, shift=True)
    x = torch.randn(1, 16, 10, 6)
    with torch.inference_mode():
        module(x)
    module(x.requires_grad_()).sum().backward()
    assert x.grad is not None
