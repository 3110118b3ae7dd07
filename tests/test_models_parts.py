"""The backbone's parts: deformable token merging against plain convolutions and an explicit
bilinear reference, downsampling of odd sizes, stochastic depth, the timing helper."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from models_helpers import tiny

from lightattn.models import model_rows, time_model
from lightattn.models._blocks import DropPath
from lightattn.models._deform_conv import DeformConv2d
from lightattn.models._downsample import (
    DeformableTokenMerging,
    OverlapEmbed,
    PatchEmbed,
    PatchMerging,
)


def deform_conv(c_in: int = 3, c_out: int = 5, seed: int = 0) -> DeformConv2d:
    torch.manual_seed(seed)
    return DeformConv2d(c_in, c_out, kernel_size=2)


def set_offsets(conv: DeformConv2d, dy: float, dx: float) -> None:
    """Every tap of every output pixel moved by (dy, dx) pixels."""
    with torch.no_grad():
        conv.offset.weight.zero_()
        conv.offset.bias.copy_(torch.tensor([dy, dx]).repeat(4))


def test_zero_offsets_are_a_plain_strided_convolution():
    conv = deform_conv()
    x = torch.randn(2, 3, 6, 8)
    torch.testing.assert_close(conv(x), F.conv2d(x, conv.weight, conv.bias, stride=2))


@pytest.mark.parametrize("dy, dx", [(1.0, 0.0), (0.0, -1.0), (-1.0, 1.0)])
def test_whole_pixel_offsets_sample_the_shifted_map_with_zeros_outside(dy, dx):
    """Offsets of whole pixels read the neighbour pixel: the conv of the map shifted by
    (-dy, -dx), zero where the samples leave the map."""
    conv = deform_conv()
    set_offsets(conv, dy, dx)
    x = torch.randn(1, 3, 6, 8)
    shifted = torch.zeros_like(x)
    h, w = x.shape[-2:]
    sy, sx = int(dy), int(dx)
    shifted[..., max(0, -sy) : h - max(0, sy), max(0, -sx) : w - max(0, sx)] = x[
        ..., max(0, sy) : h + min(0, sy), max(0, sx) : w + min(0, sx)
    ]
    torch.testing.assert_close(conv(x), F.conv2d(shifted, conv.weight, conv.bias, stride=2))


def bilinear(img: torch.Tensor, y: float, x: float) -> torch.Tensor:
    """Explicit bilinear read of a (C, H, W) map at pixel coordinates (y, x), zero outside."""
    c, h, w = img.shape
    out = torch.zeros(c, dtype=img.dtype)
    y0, x0 = int(torch.floor(torch.tensor(y))), int(torch.floor(torch.tensor(x)))
    for yi in (y0, y0 + 1):
        for xi in (x0, x0 + 1):
            if 0 <= yi < h and 0 <= xi < w:
                out += img[:, yi, xi] * (1 - abs(y - yi)) * (1 - abs(x - xi))
    return out


def test_learned_offsets_match_an_explicit_dcn_reference():
    """Random offsets per tap (channels (dy, dx) per tap ky*k + kx, mmcv's layout)."""
    conv = deform_conv(c_in=2, c_out=3)
    with torch.no_grad():
        conv.offset.weight.normal_(0, 0.5)
        conv.offset.bias.normal_(0, 0.7)
    x = torch.randn(1, 2, 4, 6)
    offsets = conv.offset(x)[0].detach()
    expected = torch.zeros(3, 2, 3)
    for oy in range(2):
        for ox in range(3):
            cols = []
            for tap in range(4):
                ky, kx = divmod(tap, 2)
                y = oy * 2 + ky + offsets[2 * tap, oy, ox].item()
                xx = ox * 2 + kx + offsets[2 * tap + 1, oy, ox].item()
                cols.append(bilinear(x[0], y, xx))
            samples = torch.stack(cols, dim=1).reshape(-1)  # index c * 4 + tap
            expected[:, oy, ox] = conv.weight.detach().reshape(3, -1) @ samples + conv.bias
    torch.testing.assert_close(conv(x)[0], expected, rtol=1e-5, atol=1e-5)


def test_deformable_conv_counts_its_macs_and_starts_as_a_conv():
    conv = deform_conv(c_in=4, c_out=8)
    assert conv.macs(3, 5) == 15 * (8 * 4 * 4 + 8 * 4 * 4)
    assert not conv.offset.weight.any() and not conv.offset.bias.any()
    with pytest.raises(ValueError, match="multiples"):
        conv(torch.randn(1, 4, 5, 6))


@pytest.mark.parametrize("hw", [(7, 9), (1, 1), (6, 5)])
def test_downsampling_pads_odd_sizes_with_zeros(hw):
    """Each halving module on an odd map equals itself on the zero-padded even map."""
    h, w = hw
    x = torch.randn(2, 8, h, w)
    padded = F.pad(x, (0, w % 2, 0, h % 2))
    torch.manual_seed(0)
    for module in (PatchMerging(8, 16), DeformableTokenMerging(8, 16).eval(), PatchEmbed(8, 16, 2)):
        tokens, oh, ow = module(x)
        ref, rh, rw = module(padded)
        assert (oh, ow) == (rh, rw) == (-(-h // 2), -(-w // 2)) == module.out_size(h, w)
        torch.testing.assert_close(tokens, ref)
    overlap = OverlapEmbed(8, 16, stride=2, kernel=3)
    assert overlap(x)[1:] == overlap.out_size(h, w) == (-(-h // 2), -(-w // 2))


def test_patch_merging_concatenates_row_offset_first():
    """timm's order: (0,0), (1,0), (0,1), (1,1) — the row offset varies fastest."""
    merge = PatchMerging(1, 4)
    with torch.no_grad():
        merge.norm.weight.fill_(1)
        merge.norm.bias.zero_()
        merge.reduction.weight.copy_(torch.eye(4))
    x = torch.tensor([[10.0, 20.0], [30.0, 40.0]]).view(1, 1, 2, 2)
    tokens, _, _ = merge(x)
    order = torch.tensor([10.0, 30.0, 20.0, 40.0])
    expected = (order - order.mean()) / torch.sqrt(order.var(unbiased=False) + 1e-5)
    torch.testing.assert_close(tokens[0, 0], expected)


def test_drop_path_drops_whole_samples_and_keeps_the_mean():
    torch.manual_seed(0)
    drop = DropPath(0.25).train()
    out = drop(torch.ones(4000, 3, 2))
    per_sample = out.flatten(1)
    assert ((per_sample == 0).all(1) | (per_sample == 1 / 0.75).all(1)).all()
    assert per_sample[:, 0].mean().item() == pytest.approx(1.0, abs=0.05)
    x = torch.randn(5, 7)
    torch.testing.assert_close(drop.eval()(x), x)
    with pytest.raises(ValueError, match="drop_path"):
        DropPath(1.0)


def test_time_model_reports_runs_and_throughput():
    model = tiny("swin_t", num_classes=3).train()
    timing = time_model(model, batch_size=2, size=(32, 48), min_runs=3, min_time=0.0)
    assert timing.runs >= 3 and timing.min_ms <= timing.ms
    assert timing.img_per_s == pytest.approx(2000 / timing.ms)
    assert model.training  # mode restored


def test_model_rows_give_params_macs_and_speed():
    rows = model_rows(["pvt_v2_b0"], size=64, batch_sizes=(1, 2), min_runs=1, min_time=0.0)
    (row,) = rows
    assert row["params"] == pytest.approx(3.67e6, rel=0.01)
    assert row["gmacs"] > 0 and row["top1"] == 70.5
    assert row["img_s_b1"] > 0 and row["img_s_b2"] > 0
    assert "img_s_b1" not in model_rows(["pvt_v2_b0"], timed=False)[0]


def test_macs_unchanged_by_int8_dynamic_quantization():
    """MACs count multiply-accumulates, not weight storage: an int8 copy (whose Linear
    `weight` is a method) counts the same, head included."""

    model = tiny("swin").eval()
    quantized = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, torch.qint8)
    assert quantized.macs(37, 45) == model.macs(37, 45)
