"""Compare a run with an earlier results.json: time ratio new/old per (mechanism, size)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .machine import BenchError
from .results import Row

COMPARED_SETTINGS = (
    "dim", "heads", "batch", "dtype", "device", "mode", "compile", "kwargs", "threads"
)  # fmt: skip


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


def old_times(old: dict[str, Any]) -> dict[tuple[str, int, int], float]:
    """(mechanism, H, W) -> median ms of the earlier run's measured rows."""
    out = {}
    for r in old["rows"]:
        try:
            key = (str(r["mechanism"]), int(r["h"]), int(r["w"]))
            t = r.get("time_ms")
        except (KeyError, TypeError, ValueError):
            continue
        if isinstance(t, (int, float)) and t > 0:
            out[key] = float(t)
    return out


def apply_compare(rows: list[Row], old: dict[str, Any]) -> int:
    """Set each row's compare_ratio (new time / old time); the number of rows compared."""
    times = old_times(old)
    count = 0
    for r in rows:
        t_old = times.get((r.mechanism, r.h, r.w))
        if t_old and r.time_ms:
            r.compare_ratio = r.time_ms / t_old
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


def lost_cases(rows: list[Row], old: dict[str, Any]) -> list[Row]:
    """Rows measured in the earlier run but skipped or failed in this one."""
    times = old_times(old)
    return [r for r in rows if r.status != "ok" and (r.mechanism, r.h, r.w) in times]


def slower_than(rows: list[Row], pct: float) -> list[Row]:
    """Rows whose time grew by more than `pct` percent."""
    return [r for r in rows if r.compare_ratio is not None and r.compare_ratio > 1 + pct / 100]
