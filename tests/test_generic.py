"""Limits, receptive fields and oracles of the generic families."""

from __future__ import annotations

import pytest
import torch
from helpers import DIM, HEADS, build, randomize_, rel_err

import lightattn


def copy_mhsa_weights(mhsa, other) -> None:
    """Give `other` (q/kv or qkv + proj) the weights of `mhsa`."""
    with torch.no_grad():
        if hasattr(other, "qkv"):
            other.qkv.load_state_dict(mhsa.qkv.state_dict())
        else:
            other.q.weight.copy_(mhsa.qkv.weight[:DIM])
            other.q.bias.copy_(mhsa.qkv.bias[:DIM])
            other.kv.weight.copy_(mhsa.qkv.weight[DIM:])
            other.kv.bias.copy_(mhsa.qkv.bias[DIM:])
        other.proj.load_state_dict(mhsa.proj.state_dict())


def receptive_field(attn, h: int, w: int, i: int, j: int) -> torch.Tensor:
    """(H, W) bool: input pixels whose values change output pixel (i, j)."""
    x = torch.randn(1, DIM, h, w, requires_grad=True)
    attn(x)[0, :, i, j].pow(2).sum().backward()
    return x.grad[0].abs().sum(0) > 0


@pytest.mark.parametrize("window_size", [19, 32])
def test_window_covering_the_map_equals_mhsa(window_size):
    mhsa = randomize_(build("mhsa")).eval()
    win = build("window", window_size=window_size, rel_pos_bias=False).eval()
    copy_mhsa_weights(mhsa, win)
    x = torch.randn(2, DIM, 13, 19)
    assert rel_err(win(x), mhsa(x)) < 1e-5


def test_sra_with_ratio_one_equals_mhsa():
    mhsa = randomize_(build("mhsa")).eval()
    sra = build("sra", sr_ratio=1).eval()
    copy_mhsa_weights(mhsa, sra)
    x = torch.randn(2, DIM, 13, 19)
    assert rel_err(sra(x), mhsa(x)) < 1e-5


def test_nystrom_with_a_landmark_per_token_is_close_to_mhsa():
    mhsa = build("mhsa").eval()
    x = torch.randn(2, DIM, 5, 6)
    for iterations, tolerance in ((6, 5e-2), (15, 2e-4)):  # converges with more iterations
        nys = build("nystrom", num_landmarks=30, pinv_iterations=iterations).eval()
        copy_mhsa_weights(mhsa, nys)
        assert rel_err(nys(x), mhsa(x)) < tolerance
    few = build("nystrom", num_landmarks=3).eval()
    copy_mhsa_weights(mhsa, few)
    assert rel_err(few(x), mhsa(x)) > 1e-3  # the approximation is real when m < N


def test_nystrom_segment_means_cover_every_token_once():
    from lightattn.layers.nystrom import segment_means

    x = torch.arange(10.0).reshape(10, 1)
    means = segment_means(x, 4)
    assert means.shape == (4, 1)
    assert torch.isclose(means.mean(), x.mean(), atol=0.6)  # near-equal segments
    torch.testing.assert_close(segment_means(x, 10), x)


def test_nystrom_pinv_inverts_a_softmax_matrix():
    from lightattn.layers.nystrom import iterative_pinv

    a = torch.randn(3, 8, 8).softmax(-1).double()
    torch.testing.assert_close(iterative_pinv(a, 30), torch.linalg.pinv(a), atol=1e-6, rtol=1e-5)


def test_linear_attention_matches_the_explicit_formula():
    attn = randomize_(build("linear"), std=0.2).eval()
    x = torch.randn(2, DIM, 6, 7)
    tokens = x.flatten(2).transpose(1, 2)
    q, k, v = attn.qkv(tokens).chunk(3, dim=-1)
    out = []
    for head in range(HEADS):
        sl = slice(head * DIM // HEADS, (head + 1) * DIM // HEADS)
        phi_q = torch.nn.functional.elu(q[..., sl]) + 1
        phi_k = torch.nn.functional.elu(k[..., sl]) + 1
        sim = phi_q @ phi_k.transpose(1, 2)
        out.append((sim / sim.sum(-1, keepdim=True)) @ v[..., sl])
    expected = attn.proj(torch.cat(out, -1))
    assert rel_err(attn(tokens, hw=(6, 7)), expected) < 1e-5


def test_window_receptive_field_is_its_window():
    attn = randomize_(build("window", window_size=4)).eval()
    field = receptive_field(attn, 13, 19, 5, 9)
    expected = torch.zeros(13, 19, dtype=torch.bool)
    expected[4:8, 8:12] = True
    assert torch.equal(field, expected)
    field = receptive_field(attn, 13, 19, 12, 18)  # the padded corner window
    expected = torch.zeros(13, 19, dtype=torch.bool)
    expected[12:13, 16:19] = True
    assert torch.equal(field, expected)


def test_shifted_window_never_mixes_across_the_wrap():
    attn = randomize_(build("window", window_size=4, shift=True)).eval()
    field = receptive_field(attn, 12, 16, 0, 0)
    expected = torch.zeros(12, 16, dtype=torch.bool)
    expected[:2, :2] = True  # the wrapped corner region only
    assert torch.equal(field, expected)
    field = receptive_field(attn, 12, 16, 3, 5)  # shifted window rows 2..5, cols 2..5
    expected = torch.zeros(12, 16, dtype=torch.bool)
    expected[2:6, 2:6] = True
    assert torch.equal(field, expected)


def test_axial_receptive_field_is_row_and_column():
    attn = randomize_(build("axial")).eval()
    field = receptive_field(attn, 9, 11, 4, 7)
    expected = torch.zeros(9, 11, dtype=torch.bool)
    expected[4, :] = True
    expected[:, 7] = True
    assert torch.equal(field, expected)


def test_axial_counts_the_pixel_itself_once():
    """With constant logits every one of the H + W - 1 pixels gets the same weight, so a value
    of 1 at the pixel itself (and 0 elsewhere) comes out as 1 / (H + W - 1)."""
    for reference in (False, True):
        attn = build("axial", reference=reference).eval()
        with torch.no_grad():
            attn.qkv.weight.zero_()
            attn.qkv.bias.zero_()
            attn.qkv.weight[2 * DIM :] = torch.eye(DIM)  # v = x, q = k = 0
            attn.proj.weight.copy_(torch.eye(DIM))
            attn.proj.bias.zero_()
        probe = torch.zeros(1, DIM, 3, 4)
        probe[0, :, 1, 2] = 1.0
        out = attn(probe)
        torch.testing.assert_close(out[0, :, 1, 2], torch.full((DIM,), 1 / (3 + 4 - 1)))
        torch.testing.assert_close(out[0, :, 0, 2], torch.full((DIM,), 1 / (3 + 4 - 1)))
        assert out[0, :, 0, 0].abs().max() == 0  # neither row nor column of the probe


def test_grid_receptive_field_is_its_position_class():
    attn = randomize_(build("grid", grid_size=4)).eval()
    h, w = 13, 19  # padded to 16 x 20: rows spaced 4 apart, columns 5 apart
    field = receptive_field(attn, h, w, 6, 7)
    rows = torch.arange(h)[:, None] % 4 == 6 % 4
    cols = torch.arange(w)[None, :] % 5 == 7 % 5
    assert torch.equal(field, rows & cols)


def test_sra_average_reduction_excludes_padding():
    attn = build("sra", sr_ratio=2, reduction="avg").eval()
    x = torch.randn(1, 5 * 3, DIM)
    reduced = attn.reduce(x, 5, 3)
    grid = x.view(5, 3, DIM)
    torch.testing.assert_close(reduced[0, -1], grid[4, 2])  # the 1x1 corner patch
    torch.testing.assert_close(reduced[0, 1], grid[0:2, 2].mean(0))


def test_sra_pvt2_pooling_is_linear_in_tokens():
    attn = build("sra", pool_size=7)
    assert attn.macs(56, 56) / attn.macs(28, 28) == pytest.approx(4, rel=0.03)


def test_mhsa_macs_match_the_textbook_formula():
    n, c = 14 * 14, DIM
    assert build("mhsa").macs(14, 14) == 3 * n * c * c + 2 * n * n * c + n * c * c


@pytest.mark.parametrize(
    ("name", "kwargs", "words"),
    [
        ("window", {"window_size": 0}, "window_size=0"),
        ("grid", {"grid_size": -2}, "grid_size=-2"),
        ("sra", {"sr_ratio": 0}, "sr_ratio=0"),
        ("sra", {"pool_size": 0}, "pool_size=0"),
        ("sra", {"reduction": "max"}, "reduction='max'"),
        ("nystrom", {"num_landmarks": 0}, "num_landmarks=0"),
        ("nystrom", {"pinv_iterations": 0}, "pinv_iterations=0"),
        ("linear", {"attn_drop": 1.0}, "attn_drop=1.0"),
        ("mhsa", {"attn_drop": 1.5}, "attn_drop=1.5"),
        ("sra", {"pool_size": 7, "sr_ratio": 4}, "pool_size=7"),
        ("sra", {"pool_size": 7, "reduction": "avg"}, "pool_size=7"),
        ("position", {"inner": "window", "reduction": 4}, "reduction=4"),
    ],
)
def test_bad_settings_raise(name, kwargs, words):
    with pytest.raises(ValueError, match=words):
        lightattn.create_attention(name, DIM, HEADS, **kwargs)


@pytest.mark.parametrize("name", ["position", "mhsa", "hilo"])
def test_qkv_bias_switch_is_honoured(name):
    with_bias = sum(p.numel() for p in build(name, qkv_bias=True).parameters())
    without = sum(p.numel() for p in build(name, qkv_bias=False).parameters())
    assert without < with_bias
