"""Compare a run with an earlier results.json: time ratio new/old per (mechanism, size), or
per (model, batch, size) for whole models, and the noise-aware rule of --fail-if-slower."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .machine import BenchError
from .results import AnyRow, row_key

COMPARED_SETTINGS = (
    "dim", "heads", "batch", "dtype", "device", "mode", "compile", "layout", "kwargs",
    "threads",
)  # fmt: skip


@dataclass(frozen=True)
class OldTime:
    """An earlier run's median of one case and the slowest of its runs (the median when the
    file does not have it)."""

    median: float
    slowest: float


def load_results(path: str | Path) -> dict[str, Any]:
    """An earlier results.json; BenchError when missing or not a benchmark result."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as err:
        raise BenchError(f"--compare {path}: cannot read: {err.strerror or err}") from None
    except json.JSONDecodeError as err:
        raise BenchError(
            f"--compare {path}: not valid JSON ({err.msg}, line {err.lineno})"
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("rows"), list):
        raise BenchError(f"--compare {path}: not a lightattn bench results.json (no 'rows')")
    if not all(isinstance(r, dict) for r in data["rows"]):
        raise BenchError(f"--compare {path}: 'rows' must be a list of objects")
    if not isinstance(data.get("config", {}), dict):
        raise BenchError(f"--compare {path}: 'config' must be an object")
    return data


def old_times(old: dict[str, Any]) -> dict[tuple[Any, ...], OldTime]:
    """The case (`row_key`: (mechanism, H, W), or a whole model's with its batch) -> the
    earlier run's times of its measured rows."""
    out = {}
    for r in old["rows"]:
        try:
            key = row_key(r)
            t = r.get("time_ms")
        except (KeyError, TypeError, ValueError):
            continue
        if is_positive(t):
            high = r.get("max_ms")
            out[key] = OldTime(float(t), float(high if is_positive(high) and high >= t else t))
    return out


def is_positive(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


def apply_compare(rows: list[AnyRow], old: dict[str, Any]) -> int:
    """Set each row's compare_ratio (new median / old median); the number of rows compared."""
    times = old_times(old)
    count = 0
    for r in rows:
        t_old = times.get(r.key)
        if t_old and r.time_ms:
            r.compare_ratio = r.time_ms / t_old.median
            count += 1
    return count


def setting_differences(config: dict[str, Any], old: dict[str, Any]) -> list[str]:
    """Settings that differ between this run and the earlier one (ratios then mislead)."""
    before = old.get("config", {})
    return [
        f"{k}: {before[k]} -> {config.get(k)}"
        for k in COMPARED_SETTINGS
        if k in before and as_json(before[k]) != as_json(config.get(k))
    ]


def as_json(value: Any) -> Any:
    """The value as it reads back from JSON (tuples become lists), for comparisons."""
    return json.loads(json.dumps(value, default=str))


def lost_cases(rows: list[AnyRow], old: dict[str, Any]) -> list[AnyRow]:
    """Rows measured in the earlier run but skipped or failed in this one."""
    times = old_times(old)
    return [r for r in rows if r.status != "ok" and r.key in times]


def slower_than(rows: list[AnyRow], old: dict[str, Any], pct: float) -> list[AnyRow]:
    """Rows that are slower beyond the noise of both runs: the new median exceeds the old
    median by more than `pct` percent and the old run's slowest time, and the new run's
    fastest time exceeds the old median (a few slow runs alone do not count)."""
    times = old_times(old)
    out = []
    for r in rows:
        t_old = times.get(r.key)
        if t_old is None or not r.time_ms:
            continue
        fastest = r.min_ms if r.min_ms is not None else r.time_ms
        if (
            r.time_ms > t_old.median * (1 + pct / 100)
            and r.time_ms > t_old.slowest
            and fastest > t_old.median
        ):
            out.append(r)
    return out
