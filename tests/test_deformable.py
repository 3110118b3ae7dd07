"""Deformable attention: the zero-offset limit, offset bounds, resolution changes, 1x1 maps."""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import build, grads, randomize_, rel_err
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode

import lightattn
import lightattn.layers.deformable as deformable_module

C, HEADS = 16, 2


def zero_offsets_(module):
    with torch.no_grad():
        module.offset_proj.weight.zero_()
    return module


def both_paths(module):
    ref = copy.deepcopy(module)
    ref.reference = True
    return [module, ref]


def pixel_centres(h, w):
    ys = (torch.arange(h) * 2 + 1) / h - 1
    xs = (torch.arange(w) * 2 + 1) / w - 1
    return torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)  # (h, w, (x, y))


def explicit_attention(module, x, bias=None):
    """Full attention with the module's own 1x1 projections (keys = every pixel)."""
    b, c, h, w = x.shape
    heads, d = module.num_heads, module.head_dim
    tokens = x.flatten(2).transpose(1, 2)
    q = module.q(tokens)
    k, v = module.kv(tokens).chunk(2, dim=-1)
    q, k, v = (t.view(b, h * w, heads, d).transpose(1, 2) for t in (q, k, v))
    logits = q @ k.transpose(-2, -1) * d**-0.5
    if bias is not None:
        logits = logits + bias
    out = (logits.softmax(dim=-1) @ v).transpose(1, 2).reshape(b, h * w, c)
    if module.dwc is not None:
        q_map = module.q(tokens).transpose(1, 2).reshape(b, c, h, w)
        out = out + module.dwc(q_map).flatten(2).transpose(1, 2)
    return module.proj(out).transpose(1, 2).reshape(b, c, h, w)


def explicit_rpb(table, h, w):
    """(heads, N, N) bias: entry (dy + Ht - 1, dx + Wt - 1) for a pixel displacement dy, dx."""
    th, tw = (table.shape[1] + 1) // 2, (table.shape[2] + 1) // 2
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()
    dy = ys[:, None] - ys[None, :] + th - 1
    dx = xs[:, None] - xs[None, :] + tw - 1
    return table[:, dy, dx]


@pytest.mark.parametrize("n_groups", [1, 2])
@pytest.mark.parametrize("hw", [(7, 9), (1, 5)], ids=str)
def test_stride_one_zero_offsets_samples_the_map_exactly(n_groups, hw):
    module = build("deformable", C, HEADS, stride=1, n_groups=n_groups, keep_positions=True)
    module = zero_offsets_(randomize_(module))
    x = torch.randn(2, C, *hw)
    with torch.no_grad():
        for path in both_paths(module.eval()):
            path(x)
            expected = pixel_centres(*hw).expand(2, n_groups, *hw, 2)
            torch.testing.assert_close(path.last_positions, expected, rtol=0, atol=1e-7)
            assert torch.equal(path.last_offsets, torch.zeros_like(path.last_offsets))
            tokens = x.flatten(2).transpose(1, 2)
            pos = path.last_positions.flatten(0, 1)
            sampled = path.sample(tokens, *hw, pos)
            assert rel_err(sampled, tokens) < 1e-6


@pytest.mark.parametrize("pos", ["none", "dwc"])
@pytest.mark.parametrize("hw", [(7, 9), (4, 4)], ids=str)
def test_zero_offsets_stride_one_is_full_attention(pos, hw):
    module = zero_offsets_(randomize_(build("deformable", C, HEADS, stride=1, pos=pos))).eval()
    x = torch.randn(2, C, *hw)
    with torch.no_grad():
        expected = explicit_attention(module, x)
        for path in both_paths(module):
            assert rel_err(path(x), expected) < 1e-5


@pytest.mark.parametrize("n_groups", [1, 2])
def test_zero_offsets_stride_one_rpb_hits_the_table_entries(n_groups):
    """At the construction size the bias for a pixel displacement is one table entry."""
    hw = (5, 7)
    module = build("deformable", C, HEADS, stride=1, pos="rpb", rpb_size=hw, n_groups=n_groups)
    module = zero_offsets_(randomize_(module)).eval()
    x = torch.randn(2, C, *hw)
    with torch.no_grad():
        bias = explicit_rpb(module.rpb_table, *hw)
        expected = explicit_attention(module, x, bias)
        for path in both_paths(module):
            assert rel_err(path(x), expected) < 1e-5


def test_rpb_is_sampled_in_fractions_of_the_map():
    """At twice the construction size, two pixels apart read one table entry apart."""
    module = build("deformable", C, HEADS, stride=1, rpb_size=4, keep_positions=True)
    module = zero_offsets_(randomize_(module))
    h = w = 8
    with torch.no_grad():
        module(torch.randn(1, C, h, w))
        bias = module.rpb(h, w, module.last_positions.flatten(0, 1))[0]  # (heads, N, N)
    table = module.rpb_table
    # query (4, 4) = token 36; key (2, 6) = token 22: displacement (+2, -2) -> table (+1, -1)
    torch.testing.assert_close(bias[:, 36, 22], table[:, 3 + 1, 3 - 1], rtol=0, atol=1e-6)
    # one pixel apart at 8x8 is half a table entry: the mean of two neighbouring entries
    torch.testing.assert_close(bias[:, 36, 37], table[:, 3, 2:4].mean(-1), rtol=0, atol=1e-6)


@pytest.mark.parametrize("factor", [2.0, 0.5])
@pytest.mark.parametrize("stride", [1, 2, 3])
def test_offsets_stay_within_the_stated_range(factor, stride):
    module = build("deformable", C, HEADS, stride=stride, offset_range_factor=factor)
    module = randomize_(module)
    module.keep_positions = True
    with torch.no_grad():
        module.offset_proj.weight.normal_(0, 50.0)
        module(torch.randn(2, C, 13, 19))
    off = module.last_offsets
    hk, wk = -(-13 // stride), -(-19 // stride)
    assert off.shape == (2, 1, hk, wk, 2)
    bound = torch.tensor([factor / wk, factor / hk])
    ratio = off.abs() / bound
    assert ratio.max() <= 1 + 1e-6
    assert ratio.max() > 0.9  # the bound is reached, so the check above means something
    torch.testing.assert_close(module.last_positions - off, pixel_centres(hk, wk).expand_as(off))


def test_unbounded_offsets_are_clamped_to_the_map():
    module = build("deformable", C, HEADS, stride=2, offset_range_factor=-1, keep_positions=True)
    module = randomize_(module)
    with torch.no_grad():
        module.offset_proj.weight.normal_(0, 50.0)
        module(torch.randn(2, C, 13, 19))
    assert module.last_offsets.abs().max() > 2.0
    assert module.last_positions.abs().max() <= 1.0


@pytest.mark.parametrize("pos", ["rpb", "dwc", "none"])
@pytest.mark.parametrize("hw", [(10, 7), (2, 3)], ids=str)
def test_fast_path_matches_reference_non_default(pos, hw):
    module = build("deformable", C, 4, n_groups=2, stride=3, pos=pos, offset_kernel_size=3)
    fast = randomize_(module, std=0.2).eval()
    ref = copy.deepcopy(fast)
    ref.reference = True
    x = torch.randn(2, C, *hw)
    y_fast, g_fast = grads(fast, x)
    y_ref, g_ref = grads(ref, x)
    assert rel_err(y_fast, y_ref) < 2e-5
    for a, b in zip(g_fast, g_ref, strict=True):
        assert rel_err(a, b) < 2e-5 or (a.abs().max() < 1e-6 and b.abs().max() < 1e-6)


class LargestAllocation(TorchDispatchMode):
    """Records the largest storage (bytes) that any op's output owns or views."""

    def __init__(self):
        super().__init__()
        self.nbytes, self.op = 0, None

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.untyped_storage().nbytes() > self.nbytes:
                self.nbytes, self.op = t.untyped_storage().nbytes(), func
        return out


def test_rpb_attention_never_holds_the_whole_bias():
    """The fast path builds the rpb bias (and its sampling grid) a chunk of query rows at a
    time: no tensor comes near the B·heads·N·Nk floats of the whole bias (before: the whole
    bias, and a grid of B·N·Nk·2 floats)."""
    b, heads, hw = 2, 2, (48, 48)
    module = randomize_(build("deformable", C, heads, stride=1, rpb_size=7), std=0.2).eval()
    x = torch.randn(b, C, *hw)
    n = nk = hw[0] * hw[1]
    whole_bias = b * heads * n * nk * 4
    with torch.no_grad(), LargestAllocation() as largest:
        module(x)
    assert largest.nbytes * 8 <= whole_bias, (largest.op, largest.nbytes, whole_bias)


CHUNKINGS = {
    # threads the module sees, query rows per chunk of RPB_CHUNK_PAIRS (None: the default)
    "one-chunk": (1, None),
    "chunks-of-one-row-of-one-image": (1, 1),
    # too few images for the threads: a chunk's rows join grid_sample's batch dimension
    "rows-as-grid-batch": (8, None),
    "rows-as-grid-batch-two-rows-a-chunk": (8, 2),
}


@pytest.mark.parametrize("chunking", list(CHUNKINGS))
@pytest.mark.parametrize("rpb_size", [3, 30, (7, 24)], ids=str)
@pytest.mark.parametrize("hw", [(13, 19), (1, 1), (5, 3)], ids=str)
@pytest.mark.parametrize("stride, n_groups", [(1, 1), (2, 2)])
def test_chunked_rpb_matches_reference(chunking, rpb_size, hw, stride, n_groups, monkeypatch):
    """Fast (the rpb bias a chunk of query rows at a time) == reference (the whole bias),
    forward and backward, with random offsets, on maps smaller and larger than the table
    (displacements beyond it read its border)."""
    b = 3
    threads, rows = CHUNKINGS[chunking]
    monkeypatch.setattr(torch, "get_num_threads", lambda: threads)
    if rows is not None:  # every chunk `rows` query rows of all the images a chunk must have
        keys = -(-hw[0] // stride) * -(-hw[1] // stride)
        images = min(b, -(-threads // n_groups))
        pairs = rows * images * n_groups * hw[1] * keys
        monkeypatch.setattr(deformable_module, "RPB_CHUNK_PAIRS", pairs)
    module = build(
        "deformable", C, 4, stride=stride, n_groups=n_groups, rpb_size=rpb_size,
        offset_range_factor=-1, offset_kernel_size=3,
    )  # fmt: skip
    fast = randomize_(module, std=0.3).eval()
    with torch.no_grad():
        fast.offset_proj.weight.normal_(0, 2.0)  # unbounded offsets, up to the map's edge
    ref = copy.deepcopy(fast)
    ref.reference = True
    chunks = []
    rpb_rows = fast.rpb_rows
    monkeypatch.setattr(fast, "rpb_rows", lambda *args: chunks.append(1) or rpb_rows(*args))
    x = torch.randn(b, C, *hw)
    y_fast, g_fast = grads(fast, x)
    y_ref, g_ref = grads(ref, x)
    assert len(chunks) > 1 if rows is not None and (rows == 1 or hw[0] > rows) else chunks == [1]
    assert rel_err(y_fast, y_ref) < 1e-5
    with torch.no_grad():  # without autograd, row chunks share a grid buffer
        assert rel_err(fast(x), y_ref) < 1e-5
    for got, want in zip(g_fast, g_ref, strict=True):
        assert rel_err(got, want) < 2e-5 or max(got.abs().max(), want.abs().max()) < 1e-6


@pytest.mark.parametrize("hw", [(13, 19), (3, 4), (20, 20)], ids=str)
def test_runs_at_a_resolution_unlike_construction(hw):
    module = randomize_(build("deformable", C, HEADS, pos="rpb", rpb_size=5)).train()
    x = torch.randn(2, C, *hw, requires_grad=True)
    y = module(x)
    y.square().mean().backward()
    assert y.shape == x.shape and torch.isfinite(y).all()
    assert torch.isfinite(x.grad).all()
    assert module.rpb_table.grad.abs().sum() > 0


@pytest.mark.parametrize("pos", ["rpb", "dwc", "none"])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("factor", [2.0, -1.0])
def test_one_pixel_map_has_no_nan(pos, stride, factor):
    module = build(
        "deformable", C, HEADS, pos=pos, stride=stride, offset_range_factor=factor,
        keep_positions=True,
    )  # fmt: skip
    module = randomize_(module, std=1.0).train()
    x = torch.randn(2, C, 1, 1, requires_grad=True)
    y = module(x)
    y.sum().backward()
    assert torch.isfinite(y).all() and torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in module.parameters())
    assert torch.isfinite(module.last_positions).all()
    if factor > 0:
        assert module.last_offsets.abs().max() <= factor


def test_bf16_grouped_dwc():
    module = build("deformable", C, 4, n_groups=2, pos="dwc", keep_positions=True)
    module = module.to(torch.bfloat16)
    y = module(torch.randn(2, C, 9, 6, dtype=torch.bfloat16))
    assert y.dtype == torch.bfloat16 and torch.isfinite(y).all()
    assert module.last_positions.dtype == torch.float32


@pytest.mark.parametrize("hw", [(1, 224), (224, 1)], ids=str)
def test_bf16_positions_are_sub_pixel_at_224(hw):
    """In bf16 only 176 of 224 pixel centres are distinct (up to 0.88 px off): positions
    are kept in fp32."""
    module = build("deformable", C, HEADS, stride=1, keep_positions=True)
    module = zero_offsets_(module).to(torch.bfloat16)
    with torch.no_grad():
        module(torch.randn(1, C, *hw, dtype=torch.bfloat16))
    axis = 0 if hw[1] == 224 else 1  # x varies along W, y along H
    coords = module.last_positions[0, 0, ..., axis].double().flatten().unique()
    exact = (torch.arange(224, dtype=torch.float64) * 2 + 1) / 224 - 1
    assert coords.numel() == 224
    assert (coords - exact).abs().max() * 224 / 2 < 0.01  # in pixels


@pytest.mark.parametrize("stride, pos", [(1, "rpb"), (1, "none"), (2, "rpb")])
@pytest.mark.parametrize("hw", [(1, 224), (224, 1)], ids=str)
def test_bf16_output_close_to_fp32_at_224(stride, pos, hw):
    module = build("deformable", C, HEADS, stride=stride, pos=pos, rpb_size=hw)
    module = randomize_(module, std=0.2).eval()
    x = torch.randn(1, C, *hw)
    with torch.no_grad():
        y32 = module(x)
        y16 = copy.deepcopy(module).to(torch.bfloat16)(x.to(torch.bfloat16))
    assert rel_err(y16.float(), y32) < 0.01


def test_positions_are_kept_only_on_request():
    module = randomize_(build("deformable", C, HEADS))
    x = torch.randn(2, C, 6, 7)
    module(x)
    assert module.last_positions is None and module.last_offsets is None
    module.keep_positions = True
    module(x)
    assert module.last_positions.shape == module.last_offsets.shape == (2, 1, 3, 4, 2)
    kept = module.last_positions
    module.keep_positions = False
    module(torch.randn(1, C, 4, 4))
    assert module.last_positions is kept


def test_forward_builds_no_tensor_from_python_data(monkeypatch):
    """torch.tensor([...], device=...) in the forward is a host-to-device copy per call."""
    module = randomize_(build("deformable", C, HEADS, pos="rpb")).train()

    def refuse(*args, **kwargs):
        raise AssertionError("torch.tensor called in the forward")

    monkeypatch.setattr(torch, "tensor", refuse)
    monkeypatch.setattr(torch, "as_tensor", refuse)
    module(torch.randn(2, C, 7, 9)).sum().backward()


EXPORT_CASES = [
    pytest.param(pos, stride, marks=[] if (pos, stride) == ("none", 2) else pytest.mark.slow)
    for pos in ("rpb", "dwc", "none")
    for stride in (1, 2)
]


@pytest.mark.parametrize("pos, stride", EXPORT_CASES)
def test_export_with_dynamic_height_and_width(pos, stride):
    """One exported program serves every H, W >= 1 (a key grid of ceil(H / stride) rows
    may be a single row) and equals eager."""
    module = randomize_(build("deformable", C, HEADS, pos=pos, stride=stride)).eval()
    dims = {2: torch.export.Dim("h", min=1, max=512), 3: torch.export.Dim("w", min=1, max=512)}
    x = torch.randn(2, C, 8, 8)
    program = torch.export.export(module, (x,), dynamic_shapes={"x": dims}).module()
    with torch.no_grad():
        for hw in [(13, 19), (3, 2), (1, 1)]:
            x = torch.randn(2, C, *hw)
            assert (program(x) - module(x)).abs().max() <= 1e-5


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n_groups": 2, "stride": 1, "pos": "dwc", "offset_kernel_size": 3},
        {"n_groups": 2, "stride": 3, "pos": "none", "offset_kernel_size": 7},
    ],
)
def test_macs_match_flop_counter_non_default(kwargs):
    module = build("deformable", C, 4, **kwargs).eval()
    for hw in [(9, 11), (16, 16)]:
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), counter:
            module(torch.randn(1, C, *hw))
        assert module.macs(*hw) == counter.get_total_flops() // 2


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"n_groups": 3}, "n_groups=3"),
        ({"n_groups": 0}, "n_groups=0"),
        ({"stride": 0}, "stride=0"),
        ({"stride": 1.5}, "stride=1.5"),
        ({"offset_kernel_size": 4}, "offset_kernel_size=4"),
        ({"offset_kernel_size": 0}, "offset_kernel_size=0"),
        ({"offset_range_factor": "big"}, "offset_range_factor='big'"),
        ({"pos": "abs"}, "pos='abs'"),
        ({"rpb_size": 0}, "rpb_size=0"),
        ({"rpb_size": (4, -1)}, r"rpb_size\[1\]=-1"),
    ],
)
def test_bad_arguments_raise(kwargs, words):
    with pytest.raises(ValueError, match=words):
        lightattn.create_attention("deformable", C, HEADS, **kwargs)
