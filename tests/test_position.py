"""DANet position attention: identity at start, explicit oracle, the inner-mechanism form."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from helpers import DIM, HEADS, build, grads, randomize_, rel_err

import lightattn

INNER = ["window", "mhsa"]


@pytest.mark.parametrize("kwargs", [{}, {"inner": "window"}, {"inner": "mhsa"}])
def test_identity_at_initialisation(kwargs):
    attn = build("position", **kwargs).train()
    x = torch.randn(2, DIM, 5, 7)
    assert torch.equal(attn(x), x)
    assert attn.gamma.item() == 0.0


def test_matches_explicit_danet_formula():
    attn = randomize_(build("position")).eval()
    x = torch.randn(2, DIM, 4, 6)
    flat = x.flatten(2)  # (B, C, N)
    proj_b = F.conv2d(x, attn.query.weight[..., None, None], attn.query.bias).flatten(2)
    proj_c = F.conv2d(x, attn.key.weight[..., None, None], attn.key.bias).flatten(2)
    proj_d = F.conv2d(x, attn.value.weight[..., None, None], attn.value.bias).flatten(2)
    s = torch.softmax(proj_b.transpose(1, 2) @ proj_c, dim=-1)  # (B, N, N), S_ij
    expected = attn.gamma * (proj_d @ s.transpose(1, 2)) + flat
    assert attn.qk_dim == DIM // 8
    with torch.no_grad():
        assert rel_err(attn(x), expected.view(x.shape)) < 1e-5


@pytest.mark.parametrize("inner", INNER)
def test_inner_mechanism_runs_and_macs_delegate(inner):
    assert inner in lightattn.list_attention()
    attn = randomize_(build("position", inner=inner)).eval()
    ref_inner = lightattn.create_attention(inner, DIM, HEADS)
    ref_inner.load_state_dict(attn.inner.state_dict())
    x = torch.randn(2, DIM, 9, 10)
    with torch.no_grad():
        expected = attn.gamma * ref_inner.eval()(x) + x
        assert rel_err(attn(x), expected) < 1e-6
    assert attn.macs(9, 10) == ref_inner.macs(9, 10)
    assert f"inner={inner}" in repr(attn)
    assert set(dict(attn.named_parameters())) == {"gamma"} | {
        f"inner.{n}" for n, _ in ref_inner.named_parameters()
    }


def test_inner_kwargs_are_forwarded():
    attn = build("position", inner="window", window_size=3, shift=True)
    assert attn.inner.window_size == 3 and attn.inner.shift
    assert attn.inner.num_heads == HEADS


@pytest.mark.parametrize("gamma_init", [0.0, 0.5])
@pytest.mark.parametrize("kwargs", [{}, {"inner": "window"}])
def test_gamma_receives_gradient(kwargs, gamma_init):
    attn = build("position", **kwargs).train()
    with torch.no_grad():
        attn.gamma.fill_(gamma_init)
    _, gs = grads(attn, torch.randn(2, DIM, 5, 6))
    names = [n for n, _ in attn.named_parameters()]
    assert gs[1 + names.index("gamma")].abs() > 0


def test_reference_propagates_to_the_inner_module():
    attn = randomize_(build("position", inner="window"), std=0.2).eval()
    assert attn.inner.reference is False
    ref = copy.deepcopy(attn)
    ref.reference = True
    assert ref.inner.reference is True and ref.reference is True
    assert build("position", inner="mhsa", reference=True).inner.reference is True
    x = torch.randn(2, DIM, 6, 7)
    y_fast, g_fast = grads(attn, x)
    y_ref, g_ref = grads(ref, x)
    assert rel_err(y_fast, y_ref) < 2e-5
    for a, b in zip(g_fast, g_ref, strict=True):
        assert rel_err(a, b) < 2e-5


def test_small_channel_counts():
    attn = randomize_(build("position", dim=4, num_heads=1)).eval()
    assert attn.qk_dim == 1
    with torch.no_grad():
        assert torch.isfinite(attn(torch.randn(1, 4, 3, 3))).all()


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"inner": "no_such_mechanism"}, "no_such_mechanism"),
        ({"inner": "window", "no_such_option": 1}, "no_such_option"),
        ({"no_such_option": 1}, "no_such_option"),
        ({"window_size": 3}, "window_size"),
        ({"inner": "position"}, "position"),
        ({"inner": 3}, "inner=3"),
        ({"reduction": 0}, "reduction=0"),
    ],
)
def test_bad_arguments_raise(kwargs, words):
    with pytest.raises(ValueError, match=words):
        build("position", **kwargs)


def test_small_maps_take_the_explicit_form_large_maps_the_fused_one():
    """Below SMALL_MAP tokens the explicit N x N form is faster than the padded fused kernel;
    macs() counts the path that runs (c' wide logits vs C wide)."""
    from lightattn.layers.position import SMALL_MAP

    module = lightattn.create_attention("position", 64, 2)
    reference = lightattn.create_attention("position", 64, 2, reference=True)
    side = int(SMALL_MAP**0.5)
    assert module.macs(side, side) == reference.macs(side, side)
    assert module.macs(side + 1, side + 1) > reference.macs(side + 1, side + 1)
