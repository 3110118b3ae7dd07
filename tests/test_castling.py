"""Castling-ViT linear-angular attention: oracles, the castling switch, robustness."""

from __future__ import annotations

import copy
import io
import math

import pytest
import torch
import torch.nn.functional as F
from helpers import DIM, HEADS, build, grads, randomize_, rel_err
from torch.utils.flop_counter import FlopCounterMode

from lightattn.layers.castling import (
    CastlingAttention,
    apply_aux_schedule,
    aux_weight_schedule,
    switch_to_inference,
)


def unit(t):
    return t / torch.sqrt(t.pow(2).sum(-1, keepdim=True) + 1e-6)


def oracle(attn, x, aux_weight=0.0):
    """Explicit O(N²) computation from the module's weights, (B, C, H, W) -> (B, C, H, W)."""
    b, c, h, w = x.shape
    tokens = x.flatten(2).transpose(1, 2)
    qkv = F.linear(tokens, attn.qkv.weight, attn.qkv.bias)
    q, k, v = qkv.view(b, h * w, 3, HEADS, c // HEADS).permute(2, 0, 3, 1, 4)
    kernel = unit(q) @ unit(k).transpose(-2, -1) / math.pi + 0.5 * torch.eye(h * w)
    o = kernel @ v
    if aux_weight:
        probs = (q @ k.transpose(-2, -1) * (c // HEADS) ** -0.5).softmax(-1)
        o = o + aux_weight * (probs * (probs > attn.threshold)) @ v
    o = unit(o).transpose(1, 2).reshape(b, h * w, c)
    v_map = qkv[..., 2 * c :].transpose(1, 2).reshape(b, c, h, w)
    pad = attn.kernel_size // 2
    conv = F.conv2d(v_map, attn.dwconv.weight, padding=pad, groups=c)
    out = F.linear(o + conv.flatten(2).transpose(1, 2), attn.proj.weight, attn.proj.bias)
    return out.transpose(1, 2).reshape(b, c, h, w)


@pytest.mark.parametrize("reference", [False, True])
def test_linear_term_equals_explicit_quadratic_formula(reference):
    attn = randomize_(build("castling", reference=reference)).eval()
    x = torch.randn(2, DIM, 5, 7)
    with torch.no_grad():
        assert rel_err(attn(x), oracle(attn, x)) < 1e-5


def test_aux_branch_is_the_masked_softmax_and_only_in_training():
    attn = randomize_(build("castling", aux_weight=0.7))
    x = torch.randn(2, DIM, 6, 5)
    with torch.no_grad():
        y_train = attn.train()(x)
        y_eval = attn.eval()(x)
        assert rel_err(y_train, oracle(attn, x, aux_weight=0.7)) < 1e-5
        assert rel_err(y_eval, oracle(attn, x)) < 1e-5
        assert rel_err(y_train, y_eval) > 1e-3
        attn.set_aux_weight(3.0)
        assert torch.equal(attn.eval()(x), y_eval)


def test_switch_removes_the_branch_and_keeps_the_zero_weight_output():
    attn = randomize_(build("castling")).train()
    x = torch.randn(2, DIM, 6, 5)
    params_before = [n for n, _ in attn.named_parameters()]
    attn.set_aux_weight(0.0)
    with torch.no_grad():
        y0 = attn(x)
    attn.switch_to_inference()
    assert not attn.has_aux and attn.aux_weight == 0.0
    assert attn.state_dict()["_extra_state"] == {"aux": False, "aux_weight": 0.0}
    assert [n for n, _ in attn.named_parameters()] == params_before
    assert "aux=False" in repr(attn)
    with torch.no_grad():
        assert torch.equal(attn.train()(x), y0)
        assert torch.allclose(attn.eval()(x), y0)
    with pytest.raises(RuntimeError, match="removed"):
        attn.set_aux_weight(0.5)
    attn.switch_to_inference()  # idempotent


def test_switch_with_nonzero_weight_warns():
    attn = build("castling")
    with pytest.warns(UserWarning, match="aux_weight"):
        attn.switch_to_inference()


def test_schedule_and_model_helpers():
    assert aux_weight_schedule(0, 100) == 1.0
    values = [aux_weight_schedule(s, 100) for s in range(101)]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))
    assert values[75] == 0.0 and values[74] > 0.0 and values[100] == 0.0
    assert aux_weight_schedule(0, 10, start=2.0, end=0.5) == 2.0
    model = torch.nn.Sequential(build("castling"), torch.nn.Sequential(build("castling")))
    assert apply_aux_schedule(model, 50, 100) == pytest.approx(0.25)
    assert all(m.aux_weight == pytest.approx(0.25) for m in (model[0], model[1][0]))
    apply_aux_schedule(model, 80, 100)
    switch_to_inference(model)
    assert not any(isinstance(m, CastlingAttention) and m.has_aux for m in model.modules())
    with pytest.raises(ValueError, match="total_steps"):
        aux_weight_schedule(1, 0)


def test_fp16_offset_inputs_on_a_large_map_stay_finite():
    """k̂ᵀv sums N = 12544 tokens of mean |v| ≈ 3.8: beyond fp16's 65504 unless fp32."""
    attn = build("castling").eval()
    x = torch.randn(1, DIM, 112, 112) + 12
    with torch.no_grad():
        y32 = attn(x)
        y16 = copy.deepcopy(attn).half()(x.half())
    assert y16.dtype == torch.float16 and torch.isfinite(y16).all()
    assert rel_err(y16.float(), y32) < 0.01


@pytest.mark.parametrize("reference", [False, True])
def test_fp16_offset_inputs_with_the_aux_branch_stay_finite(reference):
    attn = build("castling", reference=reference).train()
    x = torch.randn(1, DIM, 32, 32) + 150
    with torch.no_grad():
        y32 = attn(x)
        y16 = copy.deepcopy(attn).half()(x.half())
    assert torch.isfinite(y16).all()
    assert rel_err(y16.float(), y32) < 0.01


def saved_and_loaded(attn):
    """A fresh module (aux weight 1.0, training mode) loaded from attn's checkpoint."""
    buffer = io.BytesIO()
    torch.save(attn.state_dict(), buffer)
    buffer.seek(0)
    fresh = build("castling").train()
    fresh.load_state_dict(torch.load(buffer))
    return fresh


def test_switched_checkpoint_switches_the_module_it_is_loaded_into(monkeypatch):
    attn = randomize_(build("castling"))
    attn.set_aux_weight(0.0)
    attn.switch_to_inference()
    fresh = saved_and_loaded(attn)
    assert not fresh.has_aux

    def no_branch(*args):
        raise AssertionError("the N x N auxiliary branch ran")

    monkeypatch.setattr(CastlingAttention, "_aux_branch", no_branch)
    x = torch.randn(2, DIM, 6, 5)
    with torch.no_grad():
        assert torch.equal(fresh(x), attn.train()(x))
    assert fresh.macs(6, 5) == attn.macs(6, 5)


def test_unswitched_checkpoint_restores_the_weight():
    attn = randomize_(build("castling", aux_weight=0.3))
    fresh = saved_and_loaded(attn)
    assert fresh.has_aux and fresh.aux_weight == 0.3
    x = torch.randn(2, DIM, 6, 5)
    with torch.no_grad():
        assert torch.equal(fresh(x), attn.train()(x))
    switched = build("castling", aux_weight=0.0)
    switched.switch_to_inference()
    switched.load_state_dict(attn.state_dict())
    assert switched.has_aux and switched.aux_weight == 0.3


@pytest.mark.parametrize(
    "state", [{"aux": True}, {"aux": True, "aux_weight": -1.0}, [True, 1.0]], ids=str
)
def test_bad_extra_state_raises(state):
    attn = build("castling")
    checkpoint = {**attn.state_dict(), "_extra_state": state}
    with pytest.raises(ValueError, match="aux_weight"):
        attn.load_state_dict(checkpoint)


def test_training_forward_makes_no_host_sync(monkeypatch):
    attn = randomize_(build("castling", aux_weight=0.5)).train()

    def no_sync(self):
        raise AssertionError("Tensor.item() in the forward")

    monkeypatch.setattr(torch.Tensor, "item", no_sync)
    attn(torch.randn(2, DIM, 6, 5)).sum().backward()
    attn.set_aux_weight(0.0)
    attn(torch.randn(2, DIM, 6, 5))


@pytest.mark.slow
def test_training_forward_compiles_without_graph_breaks():
    attn = randomize_(build("castling", aux_weight=0.5)).train()
    explained = torch._dynamo.explain(attn)(torch.randn(1, DIM, 5, 6))
    assert explained.graph_break_count == 0, explained.break_reasons


def counted_macs(attn, h, w):
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        attn(torch.randn(1, DIM, h, w))
    return counter.get_total_flops() / 2


@pytest.mark.parametrize("reference", [False, True])
def test_macs_count_the_aux_branch_while_it_runs(reference):
    attn = build("castling", aux_weight=0.5, reference=reference)
    n, c = 13 * 19, DIM
    counts = {}
    for label, weight, train in [("aux", 0.5, True), ("zero", 0.0, True), ("eval", 0.5, False)]:
        attn.set_aux_weight(weight)
        attn.train(train)
        counts[label] = attn.macs(13, 19)
        assert abs(counts[label] - counted_macs(attn, 13, 19)) <= 0.05 * counts[label], label
    assert counts["aux"] - counts["eval"] == 2 * n * n * c
    assert counts["zero"] == counts["eval"]
    attn.set_aux_weight(0.0)
    attn.switch_to_inference()
    assert attn.train().macs(13, 19) == counts["eval"]


@pytest.mark.slow
def test_export_after_the_switch_with_dynamic_height_and_width():
    attn = randomize_(build("castling", aux_weight=0.0))
    attn.switch_to_inference()
    attn.eval()
    dims = {2: torch.export.Dim("h", min=1, max=512), 3: torch.export.Dim("w", min=1, max=512)}
    x = torch.randn(2, DIM, 8, 8)
    program = torch.export.export(attn, (x,), dynamic_shapes={"x": dims}).module()
    with torch.no_grad():
        for hw in [(13, 19), (3, 2), (1, 1)]:
            x = torch.randn(2, DIM, *hw)
            assert (program(x) - attn(x)).abs().max() <= 1e-5


@pytest.mark.parametrize("qkv_bias", [False, True])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_all_zero_input_gives_no_nan(qkv_bias, mode):
    attn = build("castling", qkv_bias=qkv_bias).train(mode == "train")
    out, gs = grads(attn, torch.zeros(2, DIM, 4, 5))
    assert torch.isfinite(out).all()
    assert all(torch.isfinite(g).all() for g in gs)


@pytest.mark.parametrize("kernel_size", [3, 5])
def test_conv_residual_receptive_field(kernel_size):
    """With q = 0 the attention is per token (unit(½v)); what remains spatial is the
    depthwise conv: output pixel (i, j) sees exactly the kernel_size² window."""
    attn = randomize_(build("castling", kernel_size=kernel_size)).eval()
    with torch.no_grad():
        attn.qkv.weight[:DIM] = 0
        attn.qkv.bias[:DIM] = 0
    x = torch.randn(1, DIM, 9, 10, requires_grad=True)
    attn(x)[0, :, 4, 5].sum().backward()
    seen = x.grad[0].abs().sum(0) > 0
    r = kernel_size // 2
    expected = torch.zeros(9, 10, dtype=torch.bool)
    expected[4 - r : 4 + r + 1, 5 - r : 5 + r + 1] = True
    assert torch.equal(seen, expected)


def test_cost_is_linear_in_n_after_switch():
    attn = build("castling")
    attn.set_aux_weight(0.0)
    attn.switch_to_inference()

    def counted(h, w):
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            attn.train()(torch.randn(1, DIM, h, w))
        return counter.get_total_flops()

    assert counted(16, 16) == 4 * counted(8, 8)
    assert attn.macs(16, 16) == 4 * attn.macs(8, 8)


def test_fast_matches_reference_with_aux_in_training():
    fast = randomize_(build("castling", aux_weight=0.5), std=0.2).train()
    ref = copy.deepcopy(fast)
    ref.reference = True
    x = torch.randn(2, DIM, 5, 6)
    y_fast, g_fast = grads(fast, x)
    y_ref, g_ref = grads(ref, x)
    assert rel_err(y_fast, y_ref) < 2e-5
    for a, b in zip(g_fast, g_ref, strict=True):
        assert rel_err(a, b) < 2e-5


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"kernel_size": 4}, "kernel_size=4"),
        ({"kernel_size": 0}, "kernel_size=0"),
        ({"threshold": 1.5}, "threshold=1.5"),
        ({"aux_weight": -1.0}, "aux_weight=-1.0"),
        ({"aux_weight": float("nan")}, "aux_weight=nan"),
    ],
)
def test_bad_arguments_raise(kwargs, words):
    with pytest.raises(ValueError, match=words):
        build("castling", **kwargs)
