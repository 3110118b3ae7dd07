"""Backbones (issue 10): generated over every named model and every registered mechanism.

Forward/backward, padding of odd sizes and the attention swap run on small variants of each
named model (same family and block pattern, see models_helpers.TINY); parameter and MAC
counts are checked on the full-size models against the published table.
"""

from __future__ import annotations

import pytest
import torch
from models_helpers import TINY, counted_macs, tiny, wake_

import lightattn
from lightattn.layers import get_attention_class
from lightattn.models import create_model, list_families, list_models, model_entry

NAMED = list_models()
SIZES = [(224, 224), (200, 300), (64, 64)]
PUBLISHED = [
    "acmix_swin_t",
    "dat_t",
    "litv2_s",
    "pvt_v2_b0",
    "pvt_v2_b1",
    "pvt_v2_b2",
    "pvt_v2_b2_li",
    "swin_s",
    "swin_t",
]


def ids(value) -> str:
    return "x".join(map(str, value)) if isinstance(value, tuple) else str(value)


def test_the_published_architectures_are_named():
    assert NAMED == PUBLISHED == lightattn.list_models()
    assert set(list_families()) == {"acmix_swin", "dat", "litv2", "pvt_v2", "swin"}
    for name in NAMED:
        pub = model_entry(name).published
        assert pub is not None and pub.source and 60 < pub.top1 < 90, name


# -- forward / backward on every named model ----------------------------------------------------


@pytest.mark.parametrize("hw", SIZES, ids=ids)
@pytest.mark.parametrize("name", NAMED)
def test_forward_backward_reaches_every_parameter(name, hw):
    """Logits of the right shape, finite, and a non-zero gradient in every parameter (all-zero
    initial parameters get small random values first, so no branch is idle; no stochastic
    depth, which could drop a block for the whole batch)."""
    model = wake_(tiny(name, num_classes=7, drop_path_rate=0.0)).train()
    x = torch.randn(2, 3, *hw)
    out = model(x)
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()
    (out * torch.randn_like(out)).sum().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{name}: no gradient reaches {pname}"
        assert torch.isfinite(p.grad).all(), f"{name}: non-finite gradient in {pname}"
        assert p.grad.abs().sum() > 0, f"{name}: zero gradient in {pname}"


@pytest.mark.parametrize("name", NAMED)
def test_tiny_and_odd_sizes_work_and_each_image_is_its_own(name):
    """1x1, 17x33 and 5x3 images; in eval mode each image of a batch gets the output it gets
    alone (padding and masking never mix samples)."""
    model = tiny(name, num_classes=3).eval()
    for hw in [(1, 1), (17, 33), (5, 3)]:
        x = torch.randn(2, 3, *hw)
        with torch.no_grad():
            both = model(x)
            first = model(x[:1])
        assert both.shape == (2, 3) and torch.isfinite(both).all()
        torch.testing.assert_close(both[:1], first, rtol=1e-4, atol=1e-5)


# -- sizes and costs -----------------------------------------------------------------------------


def params_m(model) -> float:
    return sum(p.numel() for p in model.parameters()) / 1e6


def attention_products(model, h: int, w: int) -> int:
    """q·kᵀ and attn·v MACs of the model's sra blocks at an H x W input (2·N·Nr·C each)."""
    total = 0
    for stage, (sh, sw) in zip(model.stages, model.out_sizes(h, w), strict=True):
        for block in stage.blocks:
            rh, rw = block.attn.reduced_size(sh, sw)
            total += 2 * sh * sw * rh * rw * block.attn.dim
    return total


@pytest.mark.parametrize("name", NAMED)
def test_params_and_macs_match_the_published_table(name):
    """Parameters within 1% of exact counts (timm's, or the released code's) or 3% of a
    paper's rounded figure; analytic MACs at 224² within 3% (timm's PVTv2 figures leave out
    the attention products, which are then left out here too)."""
    pub = model_entry(name).published
    model = create_model(name)
    tolerance = 0.01 if pub.exact else 0.03
    assert params_m(model) == pytest.approx(pub.params_m, rel=tolerance)
    if pub.gmacs is not None:
        macs = model.macs(224, 224)
        if pub.gmacs_without_attention:
            macs -= attention_products(model, 224, 224)
        assert macs / 1e9 == pytest.approx(pub.gmacs, rel=0.03)


def test_pvt_v2_macs_match_the_papers_totals():
    """With the attention products, PVTv2's totals are the papers' (2.1G, 4.0G, 3.9G)."""
    for name, paper in [("pvt_v2_b1", 2.1), ("pvt_v2_b2", 4.0), ("pvt_v2_b2_li", 3.9)]:
        assert create_model(name).macs(224, 224) / 1e9 == pytest.approx(paper, rel=0.03)


@pytest.mark.parametrize("hw", [(64, 64), (50, 70), (33, 17)], ids=ids)
@pytest.mark.parametrize("name", NAMED)
def test_macs_equal_flop_counter(name, hw):
    """`model.macs(H, W)` is exactly what FlopCounterMode counts (eval mode)."""
    model = tiny(name, num_classes=5).eval()
    assert model.macs(*hw) == counted_macs(model, torch.randn(1, 3, *hw))


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMED)
def test_full_size_macs_equal_flop_counter_at_224(name):
    model = create_model(name).eval()
    assert model.macs(224, 224) == counted_macs(model, torch.randn(1, 3, 224, 224))


def test_macs_count_the_training_mode():
    """A castling model counts its training-only auxiliary branch in train mode only."""
    model = tiny("swin_t", attn="castling")
    eval_macs = model.eval().macs(64, 64)
    assert model.train().macs(64, 64) > eval_macs


# -- features_only -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMED)
def test_features_only_returns_four_maps_at_strides_4_8_16_32(name):
    model = tiny(name, features_only=True).eval()
    assert model.head is None and model.norm is None
    with torch.no_grad():
        feats = model(torch.randn(1, 3, 200, 300))
    dims = [info["num_chs"] for info in model.feature_info]
    assert [info["reduction"] for info in model.feature_info] == [4, 8, 16, 32]
    expected = [
        (1, c, -(-200 // s), -(-300 // s)) for c, s in zip(dims, (4, 8, 16, 32), strict=True)
    ]
    assert [tuple(f.shape) for f in feats] == expected
    assert all(f.is_contiguous() for f in feats)


def test_full_size_features_only_on_a_large_image():
    """The issue's example: PVTv2-b1 on 480x640, four maps at strides 4/8/16/32."""
    model = create_model("pvt_v2_b1", features_only=True).eval()
    with torch.no_grad():
        feats = model(torch.randn(1, 3, 480, 640))
    assert [tuple(f.shape[1:]) for f in feats] == [
        (64, 120, 160),
        (128, 60, 80),
        (320, 30, 40),
        (512, 15, 20),
    ]


def test_forward_features_is_the_normed_last_map():
    model = tiny("swin_t", num_classes=4).eval()
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        feats = model.forward_features(x)
        logits = model(x)
    assert feats.shape == (2, 128, 2, 3)
    torch.testing.assert_close(model.head(feats.mean(dim=(2, 3))), logits)


# -- attention swap ------------------------------------------------------------------------------


@pytest.mark.parametrize("family", sorted(TINY))
@pytest.mark.parametrize("mechanism", lightattn.list_attention())
def test_every_mechanism_swaps_into_every_attention_stage(family, mechanism):
    """attn=NAME rebuilds every attention block of every stage as that mechanism (LITv2's
    FFN-only stages stay FFN-only) and the model trains on an odd size."""
    model = wake_(tiny(family, attn=mechanism, num_classes=3)).train()
    reference = tiny(family, num_classes=3)
    cls = get_attention_class(mechanism)
    for stage, ref_stage in zip(model.stages, reference.stages, strict=True):
        for block, ref_block in zip(stage.blocks, ref_stage.blocks, strict=True):
            if ref_block.attn is None:
                assert block.attn is None
            else:
                assert isinstance(block.attn, cls)
                assert block.attn.num_heads == ref_block.attn.num_heads
    out = model(torch.randn(2, 3, 50, 70))
    assert out.shape == (2, 3) and torch.isfinite(out).all()
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_attn_kwargs_per_stage_and_the_issue_examples():
    model = create_model("swin_t", attn="hilo", attn_kwargs={"alpha": 0.9})
    assert all(b.attn.alpha == 0.9 for s in model.stages for b in s.blocks)
    model = tiny("swin_t", attn="window", attn_kwargs=[{"window_size": w} for w in (2, 3, 4, 5)])
    assert [s.blocks[0].attn.window_size for s in model.stages] == [2, 3, 4, 5]
    model = create_model(
        "swin",
        embed_dim=32,
        depths=(2, 2, 2, 2),
        num_heads=(1, 2, 4, 8),
        window_size=7,
        num_classes=10,
    )
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 10)
    assert create_model("swin_t", num_classes=10).head.out_features == 10


def test_swin_alternates_shifted_windows_and_dat_local_deformable_blocks():
    swin = create_model("swin_t")
    assert [b.attn.shift for b in swin.stages[2].blocks] == [False, True] * 3
    dat = create_model("dat_t")
    kinds = [[type(b.attn).name for b in s.blocks] for s in dat.stages]
    assert kinds == [
        ["window", "window"],
        ["window", "window"],
        ["window", "deformable"] * 3,
        ["window", "deformable"],
    ]
    assert [b.attn.shift for b in dat.stages[0].blocks] == [False, True]
    litv2 = create_model("litv2_s")
    assert [s.blocks[0].attn is None for s in litv2.stages] == [True, True, False, False]
    assert [s.blocks[0].attn.window_size for s in litv2.stages[2:]] == [2, 1]


def test_overrides_replace_a_named_models_setting_under_either_spelling():
    model = create_model(
        "pvt_v2_b1", embed_dim=(16, 32, 64, 128), num_heads=(1, 2, 4, 8), mlp_ratio=2
    )
    assert [s.dim for s in model.specs] == [16, 32, 64, 128]
    assert all(s.mlp_ratio == 2 for s in model.specs)


# -- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: create_model("swin_x"), "swin_x"),
        (lambda: create_model("swin_t", attn="windw"), "windw"),
        (lambda: create_model("swin_t", windowsize=7), "windowsize"),
        (lambda: create_model("swin", embed_dim=32, embed_dims=(32, 64, 128, 256)), "embed_dim"),
        (lambda: create_model("pvt_v2_b2_li", sr_ratios=(8, 4, 2, 1)), "sr_ratios"),
        (lambda: create_model("swin_t", features_only=True, num_classes=10), "num_classes"),
        (lambda: create_model("swin_t", attn_kwargs={"alpha": 0.5}), "attn_kwargs"),
        (lambda: create_model("swin_t", attn="hilo", attn_kwargs={"beta": 1}), "beta"),
        (lambda: create_model("swin", depths=(2, 2), num_heads=(1, 2, 4)), "num_heads"),
        (lambda: create_model("dat", stage_spec=(("L", "X"),) * 4), "'X'"),
        (lambda: create_model("swin", depths=(2, 0, 2, 2)), "depths"),
        (lambda: create_model("swin", num_classes=-1), "num_classes"),
        (lambda: create_model("litv2", has_msa=1, local_ws=0), "local_ws"),
    ],
)
def test_bad_arguments_raise_value_errors_naming_them(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_wrong_input_raises_value_error_naming_it():
    model = tiny("swin_t")
    with pytest.raises(ValueError, match="C=4"):
        model(torch.randn(1, 4, 32, 32))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        model(torch.randn(3, 32, 32))
    gray = tiny("swin_t", in_chans=1, num_classes=2)
    assert gray(torch.randn(1, 1, 32, 32)).shape == (1, 2)


def test_tiny_configs_cover_every_family():
    assert set(TINY) == set(list_families())
