"""An NCHW map costs no more copies than tokens: the projections read and write its layout."""

from __future__ import annotations

import pytest
import torch
from helpers import DIM, build, randomize_
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import lightattn
from lightattn.layers._layout import (
    cat_channels,
    channel_first,
    conv_channels_last,
    linear_in,
    linear_out,
)

NAMES = lightattn.list_attention()
FUSED = [n for n in NAMES if build(n).fuses_layout]


class CountCopies(TorchDispatchMode):
    """Counts the ops that move a whole tensor: clone, copy_ and index_select."""

    OPS = ("aten.clone", "aten.copy_", "aten._to_copy")

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if any(str(func).startswith(op + ".") for op in self.OPS):
            self.count += 1
        return func(*args, **(kwargs or {}))


def copies(module: nn.Module, x: torch.Tensor, **kwargs) -> int:
    """Copies in one call, after a first call has filled the per-shape caches."""
    with torch.no_grad():
        module(x, **kwargs)
    with torch.no_grad(), CountCopies() as mode:
        module(x, **kwargs)
    return mode.count


def nchw_view(b: int, n: int, c: int) -> torch.Tensor:
    return torch.randn(b, c, n).transpose(1, 2)


def test_fused_mechanisms_are_the_projection_families():
    assert {"mhsa", "sra", "hilo", "grid"} <= set(FUSED)


@pytest.mark.parametrize("name", FUSED)
def test_a_map_costs_no_more_copies_than_tokens(name):
    attn = build(name).eval()
    x = torch.randn(2, DIM, 12, 10)
    tokens = x.flatten(2).transpose(1, 2).contiguous()
    assert copies(attn, x) <= copies(attn, tokens, hw=(12, 10))


@pytest.mark.parametrize("name", FUSED)
@pytest.mark.parametrize("hw", [(12, 10), (3, 2)], ids=["fused", "small-map"])
def test_map_and_tokens_agree_forward_and_backward(name, hw):
    attn = randomize_(build(name)).train()
    x = torch.randn(2, DIM, *hw)
    weight = torch.randn(x.shape)
    y, gy = map_grads(attn, x, weight)
    t, gt = map_grads(attn, x.flatten(2).transpose(1, 2).contiguous(), weight, hw)
    assert y.is_contiguous()
    torch.testing.assert_close(y, t)
    for a, b in zip(gy, gt, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def map_grads(attn: nn.Module, x: torch.Tensor, weight: torch.Tensor, hw=None):
    """The output as a map and the gradients of (output * weight).sum() w.r.t. the input
    (as a map) and every parameter; train mode with dropout off, same seed."""
    x = x.detach().requires_grad_(True)
    attn.zero_grad(set_to_none=True)
    torch.manual_seed(0)
    out = attn(x, hw=hw)
    if hw is not None:
        out = out.transpose(1, 2).reshape(weight.shape)
    (out * weight).sum().backward()
    gx = x.grad if hw is None else x.grad.transpose(1, 2).reshape(weight.shape)
    return out.detach(), [gx, *(p.grad for p in attn.parameters())]


def test_channel_first_needs_a_large_enough_map():
    assert channel_first(nchw_view(2, 64, 64))
    assert not channel_first(nchw_view(2, 49, 512))  # N < C: copy + linear is faster
    assert not channel_first(torch.randn(2, 49, 64))
    assert not channel_first(nchw_view(2, 1, 64))


@pytest.mark.parametrize("bias", [True, False])
def test_linear_in_and_out_equal_linear(bias):
    linear = nn.Linear(16, 24, bias=bias)
    x = nchw_view(3, 40, 16)
    y = linear_in(linear, x)
    torch.testing.assert_close(y, linear(x))
    assert y.is_contiguous()
    out = linear_out(linear, x.contiguous(), like=x)
    torch.testing.assert_close(out, linear(x))
    assert out.transpose(1, 2).is_contiguous()  # written channel-first


@pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor")
def test_a_hooked_or_quantized_linear_runs_as_itself():
    linear = nn.Linear(16, 16)
    calls = []
    linear.register_forward_hook(lambda *args: calls.append(1))
    x = nchw_view(2, 40, 16)
    linear_in(linear, x)
    linear_out(linear, x, like=x)
    assert len(calls) == 2
    quantized = torch.ao.nn.quantized.dynamic.Linear(16, 16)
    torch.testing.assert_close(linear_in(quantized, x), quantized(x))


def test_cat_channels_keeps_a_channel_first_layout():
    a, b = nchw_view(2, 30, 4), nchw_view(2, 30, 6)
    out = cat_channels([a, b])
    torch.testing.assert_close(out, torch.cat([a, b], dim=-1))
    assert out.transpose(1, 2).is_contiguous()


def test_conv_channels_last_caches_the_weight_until_it_changes():
    conv = nn.Conv2d(8, 8, 2, stride=2)
    x = torch.randn(2, 8, 6, 6).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        torch.testing.assert_close(conv_channels_last(conv, x), conv(x))
        first = conv._channels_last_weight[1]
        conv_channels_last(conv, x)
        assert conv._channels_last_weight[1] is first
        conv.weight.mul_(2)
        torch.testing.assert_close(conv_channels_last(conv, x), conv(x))
    assert conv._channels_last_weight[1] is not first
    y = conv_channels_last(conv, x)  # with grad: the parameter itself, so it trains
    y.sum().backward()
    assert conv.weight.grad is not None
