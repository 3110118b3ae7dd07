"""Benchmark baselines (timm Swin, timm PVTv2, official HiLo) equal their lightattn modules,
and compare() times them sanely."""

from __future__ import annotations

import itertools

import pytest
import torch
from helpers import build, randomize_

from lightattn.bench import baselines
from lightattn.bench.baselines import (
    Case,
    OfficialHiLo,
    PvtV2Attention,
    TimmSwinWindowAttention,
    baseline_for,
    compare,
    markdown,
    time_interleaved,
    timm_fused_variants,
)

DIM, HEADS, BATCH = 16, 2, 2


def outputs(name: str, hw: tuple[int, int], dim: int = DIM, heads: int = HEADS, **kwargs):
    """(lightattn output, baseline output) on the same (B, N, C) input, random weights."""
    baseline_kwargs = {k: kwargs.pop(k) for k in ("fused",) if k in kwargs}
    m = randomize_(build(name, dim, heads, **kwargs)).eval()
    base = baseline_for(m, **baseline_kwargs).eval()
    x = torch.randn(BATCH, hw[0] * hw[1], dim, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        return m(x, hw=hw), base(x, hw)


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize(
    "hw, ws, shift",
    [
        ((8, 8), 4, True),
        ((8, 8), 4, False),
        ((12, 8), 4, True),
        ((8, 3), 4, True),  # one side is a single window: shifted along H only
        ((3, 3), 4, True),  # map smaller than the window: window = map, no shift
        ((7, 7), 7, True),
        ((14, 14), 7, True),
    ],
)
def test_timm_swin_equals_window(hw, ws, shift, fused):
    ours, timm = outputs("window", hw, window_size=ws, shift=shift, fused=fused)
    torch.testing.assert_close(timm, ours, atol=1e-5, rtol=1e-5)


def test_timm_swin_follows_timm_defaults_and_mask():
    base = TimmSwinWindowAttention(DIM, HEADS, window_size=4, shift=True)
    assert base.fused is False  # Swin asks use_fused_attn(experimental=True)
    geo = base.geometry(8, 8, torch.device("cpu"), torch.float32)
    assert geo.window == (4, 4) and geo.shift == (2, 2)
    assert set(geo.attn_mask.unique().tolist()) == {-100.0, 0.0}
    assert base.geometry(8, 8, torch.device("cpu"), torch.float32) is geo  # cached


def test_timm_swin_pads_without_masking():
    """timm pads a map that is not a multiple of the window and lets the padded keys take
    part: the baseline runs, but it is not lightattn's (masked) result."""
    ours, timm = outputs("window", (10, 9), window_size=4, shift=True)
    assert timm.shape == ours.shape
    assert not torch.allclose(timm, ours, atol=1e-3)


def test_timm_swin_needs_a_bias_table():
    with pytest.raises(ValueError, match="relative position bias"):
        TimmSwinWindowAttention.from_lightattn(build("window", rel_pos_bias=False))


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize(
    "hw, kwargs",
    [
        ((8, 8), {"sr_ratio": 1}),
        ((8, 8), {"sr_ratio": 2}),
        ((8, 12), {"sr_ratio": 4}),
        ((14, 14), {"pool_size": 7}),
    ],
)
def test_timm_pvt_equals_sra(hw, kwargs, fused):
    ours, timm = outputs("sra", hw, fused=fused, **kwargs)
    torch.testing.assert_close(timm, ours, atol=1e-5, rtol=1e-5)


def test_timm_pvt_defaults_and_limits():
    assert PvtV2Attention(DIM, HEADS, sr_ratio=2).fused is True
    with pytest.raises(ValueError, match="reduction"):
        PvtV2Attention.from_lightattn(build("sra", sr_ratio=2, reduction="avg"))


@pytest.mark.parametrize(
    "hw, ws, alpha",
    [((8, 8), 2, 0.5), ((8, 6), 2, 0.9), ((8, 8), 1, 0.9), ((8, 8), 2, 0.0), ((8, 8), 2, 1.0)],
)
def test_official_hilo_equals_hilo(hw, ws, alpha):
    ours, official = outputs("hilo", hw, dim=32, heads=4, window_size=ws, alpha=alpha)
    torch.testing.assert_close(official, ours, atol=1e-5, rtol=1e-5)


def test_official_hilo_needs_divisible_maps():
    base = OfficialHiLo.from_lightattn(build("hilo", 32, 4, window_size=2))
    with pytest.raises(ValueError, match="divisible"):
        base(torch.randn(1, 35, 32), (5, 7))


def test_weights_are_copied_not_shared():
    m = build("window")
    base = baseline_for(m)
    assert torch.equal(base.qkv.weight, m.qkv.weight)
    assert base.qkv.weight.data_ptr() != m.qkv.weight.data_ptr()
    with pytest.raises(ValueError, match="no baseline"):
        baseline_for(build("mhsa"))


def test_time_interleaved_alternates_and_honours_min_time():
    calls: list[str] = []
    fns = [lambda name=n: calls.append(name) for n in "abc"]
    ticks = itertools.count()
    times = time_interleaved(
        fns, runs=3, min_time=0.02, warmup=1, max_runs=100, timer=lambda: next(ticks) / 1000
    )
    assert calls[:9] == list("abcabccba")  # warm-up round, then A B C, C B A, ...
    assert [len(t) for t in times] == [7, 7, 7]  # 3 calls of 1 ms a round: 7 rounds >= 20 ms
    assert all(t == pytest.approx(0.001) for ts in times for t in ts)


def tiny_cases() -> list[Case]:
    return [
        Case("swin", "tiny swin", "window", 16, 2, (8, 8), 2, {"window_size": 4, "shift": True}),
        Case("pvt", "tiny pvt", "sra", 16, 2, (8, 8), 2, {"sr_ratio": 2}),
        Case("hilo", "tiny hilo", "hilo", 32, 4, (4, 4), 2, {"window_size": 2, "alpha": 0.5}),
    ]


def test_compare_fields():
    results = compare(tiny_cases(), threads=1, runs=3, min_time=0.0, warmup=1)
    assert [r.case.label for r in results] == ["tiny swin", "tiny pvt", "tiny hilo"]
    for r in results:
        assert r.runs == 3
        assert r.ratio_tokens > 0 and r.ratio_map > 0
        assert 0 < r.baseline_ms.min <= r.baseline_ms.median <= r.baseline_ms.max
        assert r.max_abs_diff < 1e-5 and r.max_rel_diff < 1e-4
    text = markdown(results, threads=1)
    assert text.count("| tiny ") == 3 and "timm 1.0 Swin" in text
    table = [line for line in text.splitlines() if line.startswith("|")]
    assert len({line.count(" |") for line in table if "---" not in line}) == 1


def test_timm_fused_variants():
    cases = tiny_cases()
    both = timm_fused_variants(cases, "both")
    assert [c.baseline_kwargs.get("fused") for c in both] == [False, True, False, True, None]
    assert timm_fused_variants(cases, "default") == cases
    with pytest.raises(ValueError):
        timm_fused_variants(cases, "maybe")


def test_main_writes_table(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(baselines.CASES, "hilo", tiny_cases()[2:])
    out = tmp_path / "table.md"
    argv = ["--cases", "hilo", "--runs", "1", "--min-time", "0", "--threads", "1"]
    assert baselines.main([*argv, "--out", str(out)]) == 0
    assert "| tiny hilo |" in out.read_text() and "| tiny hilo |" in capsys.readouterr().out
