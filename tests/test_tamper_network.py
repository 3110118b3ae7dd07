"""lightattn.tamper network: the STDC backbone against its published sizes, the analytic MACs
against FlopCounterMode, `stdc_tamper`'s outputs on odd sizes, gradients, the swappable
position attention, and STDC's detail target and loss."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from lightattn.layers._registry import get_attention_class
from lightattn.tamper import (
    PUBLISHED,
    STDCNet,
    create_tamper_model,
    detail_loss,
    detail_target,
    dice_loss,
    list_tamper_models,
)

TINY = 0.125  # base 8: backbone channels 4, 8, 32, 64, 128
CLASSIFIER_LINEARS = 1024 * 1024 + 1024 * 1000  # the official fc and linear, MACs per image


def counted_macs(fn) -> int:
    """MACs that FlopCounterMode sees in fn() (SDPA under the math backend, no grad)."""
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), counter:
        fn()
    return counter.get_total_flops() // 2


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def ceil_div(n: int, d: int) -> int:
    return -(-n // d)


# -- the backbone ------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["stdc1", "stdc2"])
def test_backbone_matches_published_params_and_macs(variant):
    """The published params are the feature extractor's (no conv_last); the published MACs
    include conv_last (and, exactly, the classifier's two linears): see STDCNet's docstring."""
    params, macs = PUBLISHED[variant]
    plain, with_last = STDCNet(variant), STDCNet(variant, conv_last=True)
    assert abs(n_params(plain) / params - 1) < 0.002
    assert abs(with_last.macs(224, 224) / macs - 1) < 0.02
    assert abs((with_last.macs(224, 224) + CLASSIFIER_LINEARS) / macs - 1) < 0.0005
    # neither single definition matches both figures within 2%
    assert abs(plain.macs(224, 224) / macs - 1) > 0.02
    assert abs(n_params(with_last) / params - 1) > 0.02


def test_backbone_macs_at_224_match_flop_counter():
    model = STDCNet("stdc1", conv_last=True).eval()
    assert counted_macs(lambda: model(torch.randn(1, 3, 224, 224))) == model.macs(224, 224)


@pytest.mark.parametrize("variant", ["stdc1", "stdc2"])
@pytest.mark.parametrize("hw", [(64, 64), (37, 53)])
@pytest.mark.parametrize("conv_last", [False, True])
def test_backbone_macs_match_flop_counter_small(variant, hw, conv_last):
    model = STDCNet(variant, width=0.25, conv_last=conv_last).eval()
    assert counted_macs(lambda: model(torch.randn(1, 3, *hw))) == model.macs(*hw)


def test_backbone_features_at_strides_2_to_32_on_odd_sizes():
    model = STDCNet("stdc2", width=0.25).eval()
    h, w = 255, 383
    with torch.no_grad():
        feats = model(torch.randn(1, 3, h, w))
    assert [f.shape[1] for f in feats] == model.channels == [8, 16, 64, 128, 256]
    expected = [(ceil_div(h, s), ceil_div(w, s)) for s in (2, 4, 8, 16, 32)]
    assert [tuple(f.shape[-2:]) for f in feats] == expected
    assert model.feature_sizes(h, w) == [tuple(f.shape[-2:]) for f in feats]
    assert model.channels[2:] == [4 * 16, 8 * 16, 16 * 16]


# -- stdc_tamper -------------------------------------------------------------------------


def test_factory_names_the_model():
    assert list_tamper_models() == ["stdc_tamper"]
    model = create_tamper_model("stdc_tamper", variant="stdc2", width=TINY, inner="linear")
    assert (model.variant, model.width, model.inner) == ("stdc2", TINY, "linear")
    assert len(model.backbone.stages[1]) == 5


@pytest.mark.parametrize(
    "kwargs",
    [
        {"inner": "mhsa"},
        {"inner": None, "channel_attention": True},
        {"inner": "linear", "attention_at": 32},
        {"inner": "hilo", "variant": "stdc2"},
    ],
    ids=["mhsa", "pam-cam", "linear-at32", "hilo-stdc2"],
)
@pytest.mark.parametrize("hw", [(64, 64), (45, 71)])
def test_network_macs_match_flop_counter(kwargs, hw):
    model = create_tamper_model(width=0.25, **kwargs).eval()
    x = torch.randn(1, 3, *hw)
    assert counted_macs(lambda: model(x)) == model.macs(*hw)
    model.train()  # BN in train mode needs B > 1 on the pooled 1 x 1 maps
    assert counted_macs(lambda: model(x.expand(2, -1, -1, -1))) == 2 * model.macs(*hw, detail=True)


@pytest.mark.parametrize("hw, width", [((255, 383), 0.5), ((64, 64), 1.0)])
def test_eval_forward_gives_input_sized_masks_and_scores(hw, width):
    model = create_tamper_model(width=width).eval()
    with torch.inference_mode():
        out = model(torch.randn(2, 3, *hw))
    assert set(out) == {"mask_logits", "score_logits"}
    assert out["mask_logits"].shape == (2, 1, *hw)
    assert out["score_logits"].shape == (2,)
    assert all(bool(torch.isfinite(v).all()) for v in out.values())


def test_train_forward_adds_detail_logits_at_one_eighth():
    model = create_tamper_model(width=TINY).train()
    out = model(torch.randn(2, 3, 255, 383))
    assert out["mask_logits"].shape == (2, 1, 255, 383)
    assert out["score_logits"].shape == (2,)
    assert out["detail_logits"].shape == (2, 1, 32, 48)


def test_gradient_reaches_every_parameter():
    torch.manual_seed(0)
    model = create_tamper_model(width=TINY, channel_attention=True).train()
    with torch.no_grad():  # the residual gammas start at 0, which blocks the attention's grads
        model.position.gamma.fill_(0.5)
        model.channel.gamma.fill_(0.5)
    out = model(torch.randn(2, 3, 64, 96))
    loss = out["mask_logits"].mean() + out["score_logits"].sum() + out["detail_logits"].mean()
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum()]
    assert not missing


@pytest.mark.parametrize("inner", ["mhsa", "linear", "hilo", "sra"])
def test_inner_swaps_the_position_modules_mechanism(inner):
    model = create_tamper_model(width=0.25, inner=inner).eval()
    assert type(model.position.inner) is get_attention_class(inner)
    assert model.position.dim == model.backbone.channels[3]
    with torch.no_grad():
        model.position.gamma.fill_(1.0)
        out = model(torch.randn(1, 3, 45, 71))
    assert out["mask_logits"].shape == (1, 1, 45, 71)
    assert bool(torch.isfinite(out["mask_logits"]).all())


def test_inner_none_is_danets_own_pam_and_kwargs_reach_the_inner_module():
    assert create_tamper_model(width=TINY, inner=None).position.inner is None
    model = create_tamper_model(width=TINY, inner="hilo", inner_kwargs={"alpha": 0.5})
    assert model.position.inner.alpha == 0.5


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"variant": "stdc3"}, "variant"),
        ({"width": 0}, "width"),
        ({"width": -1.0}, "width"),
        ({"width": float("nan")}, "width"),
        ({"inner": "nope"}, "inner"),
        ({"inner": "position"}, "inner"),
        ({"inner_kwargs": ["alpha"]}, "inner_kwargs"),
        ({"attention_at": 8}, "attention_at"),
        ({"name": "stdc_tamperr"}, "name"),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(kwargs, name):
    with pytest.raises(ValueError, match=name):
        create_tamper_model(**kwargs)


def test_bad_input_raises_value_error():
    model = create_tamper_model(width=TINY).eval()
    with pytest.raises(ValueError, match="shape"):
        model(torch.randn(1, 4, 32, 32))


# -- detail guidance ---------------------------------------------------------------------


def test_detail_target_of_an_empty_mask_is_zero():
    target = detail_target(torch.zeros(2, 40, 56))
    assert target.shape == (2, 1, 40, 56)
    assert not target.any()


def test_detail_target_of_a_square_marks_only_its_border():
    mask = torch.zeros(1, 1, 64, 64)
    mask[..., 16:48, 16:48] = 1
    target = detail_target(mask)[0, 0]
    assert target.sum() > 0
    rows, cols = torch.meshgrid(torch.arange(64), torch.arange(64), indexing="ij")
    inside = (rows >= 16) & (rows < 48) & (cols >= 16) & (cols < 48)
    # distance to the square's edge (inside) or from it (outside), in pixels
    dist = torch.minimum(
        torch.minimum((rows - 16).abs(), (rows - 47).abs()),
        torch.minimum((cols - 16).abs(), (cols - 47).abs()),
    )
    dist = torch.where(inside, dist, torch.full_like(dist, 99))
    assert bool((target[dist > 2] == 0).all())
    assert bool((target[dist == 0] == 1).all())  # the square's inner rim, all of it


def test_detail_loss_by_hand():
    logits = torch.zeros(1, 1, 2, 2)
    target = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    # BCE of p = 0.5 is ln 2 on every pixel; Dice: 1 - (2·0.5 + 1) / (4·0.5 + 1 + 1) = 0.5
    assert detail_loss(logits, target).item() == pytest.approx(math.log(2) + 0.5, abs=1e-6)
    probs = torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 1.0]])
    assert dice_loss(*probs).item() == pytest.approx(1 - 3 / 4)
    # logits at 1/2 resolution are upsampled to the target's size first
    assert detail_loss(torch.zeros(1, 1, 1, 1), target).item() == pytest.approx(
        math.log(2) + 0.5, abs=1e-6
    )


# -- the noise-residual input ------------------------------------------------------------


def test_noise_residuals_vanish_on_smooth_images_and_see_noise():
    from lightattn.tamper.network import NoiseResidual

    residual = NoiseResidual()
    ramp = torch.linspace(0, 1, 40).view(1, 1, 1, 40).expand(1, 3, 30, 40)
    out = residual(ramp)  # a linear ramp: every kernel sums to 0 and kills first order
    assert out.shape == (1, 6, 30, 40) and torch.equal(out[:, :3], ramp)
    assert out[:, 3:, 2:-2, 2:-2].abs().max() < 1e-4  # (the 2-px rim sees the replicated edge)
    noisy = ramp + torch.randn(1, 1, 30, 40).expand(1, 3, 30, 40) * (4 / 255)
    assert residual(noisy)[:, 3:].abs().mean() > 0.3
    assert residual(torch.rand(2, 3, 1, 1)).shape == (2, 6, 1, 1)


@pytest.mark.parametrize("hw", [(13, 19), (1, 1), (64, 64)])
def test_noise_input_network_runs_on_odd_sizes_and_counts_its_macs(hw):
    model = create_tamper_model(width=TINY, inner="linear", noise=True).eval()
    assert model.backbone.stem2.conv.in_channels == 6
    x = torch.rand(1, 3, *hw)
    with torch.no_grad():
        assert model(x)["mask_logits"].shape == (1, 1, *hw)
    assert counted_macs(lambda: model(x)) == model.macs(*hw)


def test_noise_must_be_a_bool():
    with pytest.raises(ValueError, match="noise="):
        create_tamper_model(width=TINY, noise="yes")
