"""Named benchmark settings that re-measure a published comparison, and their summaries."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rich.table import Table

import lightattn

from .machine import BenchError
from .results import BASELINE, BenchResult, Row


@dataclass(frozen=True)
class Preset:
    """Settings of a published single-layer comparison and the numbers it reported."""

    name: str
    source: str
    attn: list[str]
    sizes: list[tuple[int, int]]
    dim: int
    heads: int
    batch: int
    dtype: str
    kwargs: dict[str, dict[str, Any]]
    published_img_s: dict[str, float]
    published_ratios: dict[tuple[str, str], float]
    notes: list[str] = field(default_factory=list)
    # measurement settings of the preset (explicit options win): enough runs for a stable
    # median at its large batch, and room for them in the case limit and the run budget
    min_time: float = 2.0
    min_runs: int = 7
    max_case_seconds: float = 60.0
    time_budget: float = 600.0


LITV2_CPU = Preset(
    name="litv2-cpu",
    source="LITv2 (Pan et al., NeurIPS 2022), single-layer CPU throughput, i9-10900X (10 cores)",
    attn=["hilo", "window", "sra", "mhsa"],
    sizes=[(14, 14)],
    dim=768,
    heads=12,
    batch=64,
    dtype="fp32",
    kwargs={
        "hilo": {"window_size": 2, "alpha": 0.9},
        "window": {"window_size": 7, "shift": False, "rel_pos_bias": True},
        "sra": {"sr_ratio": 2},
    },
    published_img_s={"hilo": 1029.0, "window": 631.0, "sra": 710.0, "mhsa": 505.0},
    published_ratios={("hilo", "window"): 1.6, ("hilo", "sra"): 1.4},
    notes=[
        "window: 7×7 windows without shift, with a Swin relative position bias table",
        "published run: 30 iterations of the forward with autograd recording and no warm-up; "
        "here: warm-up, then the median of at least 7 runs and 2 s, in inference mode (or "
        "forward+backward with --backward)",
    ],
)

PRESETS: dict[str, Preset] = {LITV2_CPU.name: LITV2_CPU}


def check_available(preset: Preset) -> None:
    """BenchError naming the preset's mechanisms that are not registered."""
    missing = [n for n in preset.attn if n not in lightattn.list_attention()]
    if missing:
        raise BenchError(
            f"preset {preset.name} needs mechanism(s) not registered: {', '.join(missing)}"
        )


def preset_kwargs(preset: Preset, names: list[str]) -> dict[str, dict[str, Any]]:
    """The preset's constructor arguments of the mechanisms in `names` (all when empty)."""
    return {
        n: dict(kw) for n, kw in preset.kwargs.items() if not names or n in names or n == BASELINE
    }


def preset_rows(result: BenchResult, preset: Preset) -> list[Row]:
    """The measured rows at the preset's own map sizes (the published numbers are for those)."""
    sizes = {f"{h}x{w}" for h, w in preset.sizes}
    return [r for r in result.rows if r.size in sizes and r.images_per_s]


def throughputs(result: BenchResult, preset: Preset) -> dict[str, float]:
    """mechanism -> images/s of its measured row at the preset's size."""
    return {r.mechanism: r.images_per_s for r in preset_rows(result, preset)}


def differences(config: dict[str, Any], preset: Preset) -> list[str]:
    """Settings of this run that differ from the published ones (`config` as in results.json)."""
    published = {
        "dim": preset.dim, "heads": preset.heads, "batch": preset.batch, "dtype": preset.dtype,
        "sizes": [f"{h}x{w}" for h, w in preset.sizes],
    }  # fmt: skip
    out = [f"{k} {v} -> {config.get(k)}" for k, v in published.items() if config.get(k) != v]
    run_kw = config.get("kwargs", {})
    for name in config.get("attn") or dict.fromkeys([*preset.kwargs, *run_kw]):
        want, got = preset.kwargs.get(name, {}), run_kw.get(name, {})
        if want != got:
            out.append(f"{name} kwargs {want} -> {got}")
    return out


def label(name: str, result: BenchResult) -> str:
    """`name (key=value, ...) img/s` with the values the measured row actually used."""
    keys = result.config.get("kwargs", {}).get(name, {})
    row = next((r for r in result.rows if r.mechanism == name), None)
    values = row.settings if row is not None else keys
    settings = ", ".join(f"{k}={values.get(k, keys[k])}" for k in keys)
    return f"{name} ({settings}) img/s" if settings else f"{name} img/s"


def preset_table(result: BenchResult, preset: Preset) -> Table:
    """Measured images/s (at the preset's size) beside the published ones, then the published
    speed ratios."""
    measured = throughputs(result, preset)
    table = Table(title=f"preset {preset.name}: {preset.source}", caption="\n".join(preset.notes))
    for col in ("", "measured", "published"):
        table.add_column(col, justify="right" if col else "left")
    for name in preset.attn:
        value = measured.get(name)
        table.add_row(
            label(name, result),
            f"{value:.0f}" if value else "n/a",
            f"{preset.published_img_s[name]:g}",
        )
    for (a, b), published in preset.published_ratios.items():
        ratio = measured[a] / measured[b] if a in measured and b in measured else None
        table.add_row(f"{a}/{b}", f"{ratio:.2f}×" if ratio else "n/a", f"{published:g}×")
    return table


def preset_summary(result: BenchResult, preset: Preset) -> dict[str, Any]:
    """The same comparison as a dict (for --json and results.json)."""
    measured = throughputs(result, preset)
    ratios = {
        f"{a}/{b}": {
            "measured": measured[a] / measured[b] if a in measured and b in measured else None,
            "published": published,
        }
        for (a, b), published in preset.published_ratios.items()
    }
    return {
        "preset": preset.name,
        "source": preset.source,
        "images_per_s": {
            n: {"measured": measured.get(n), "published": preset.published_img_s[n]}
            for n in preset.attn
        },
        "ratios": ratios,
        "differences": differences(result.config, preset),
        "notes": preset.notes,
    }
