"""shrink.json, shrink.csv, shrink.md and shrink.png of a shrink run."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

COLUMNS = (
    "step", "img_size", "params", "macs", "weight_mb", "eager_b1", "eager_bB", "ort_b1",
    "ort_bB", "test_acc", "acc_before_ft", "kd_before_ft", "kd_after_ft", "ft_steps",
    "seconds", "note", "ort_note",
)  # fmt: skip


def batch_keys(result: dict[str, Any]) -> dict[str, str]:
    b = result["latency_batch"]
    return {"eager_bB": f"eager_b{b}", "ort_bB": f"ort_b{b}"}


def value(row: dict[str, Any], key: str, keys: dict[str, str]) -> Any:
    return row.get(keys.get(key, key))


def ratio(first: Any, last: Any) -> float | None:
    if first is None or last is None or last <= 0:
        return None
    return first / last


def summary(result: dict[str, Any]) -> dict[str, Any]:
    """Start vs final: MACs and latency reductions (x), accuracy change (points), goal; for
    a run ending with int8, the same for the float model before it under "before_int8"."""
    out = compare_rows(result, result["rows"][0], result["rows"][-1])
    if len(result["rows"]) > 2 and result["rows"][-1]["step"] == "int8":
        out["before_int8"] = compare_rows(result, result["rows"][0], result["rows"][-2])
    return out


def compare_rows(result: dict[str, Any], first: dict[str, Any], last: dict[str, Any]) -> dict:
    keys = batch_keys(result)
    out = {
        "macs_x": ratio(first["macs"], last["macs"]),
        "params_x": ratio(first["params"], last["params"]),
        "acc_points": 100 * (last["test_acc"] - first["test_acc"]),
    }
    for key in ("eager_b1", "eager_bB", "ort_b1", "ort_bB"):
        out[f"{key}_x"] = ratio(value(first, key, keys), value(last, key, keys))
    lat = [out[k] for k in ("eager_b1_x", "eager_bB_x") if out[k] is not None]
    out["goal"] = {
        "macs_4x": out["macs_x"] is not None and out["macs_x"] >= 4,
        "latency_3x_eager": bool(lat) and min(lat) >= 3,
        "accuracy_within_1pt": out["acc_points"] >= -1.0,
    }
    return out


def fmt(x: Any, spec: str, missing: str = "n/a") -> str:
    return missing if x is None else format(x, spec)


def markdown(result: dict[str, Any]) -> str:
    keys, b = batch_keys(result), result["latency_batch"]
    d = result["distill"]
    lines = [
        f"checkpoint `{result['checkpoint']}`, data {result['data']}, steps "
        f"`{','.join(result['steps'])}`; KD after each step: {d['steps']} steps of batch "
        f"{d['batch_size']}, lr {d['lr']}, T {d['temperature']}, alpha {d['alpha']}; seed "
        f"{result['seed']}; latency with {result['threads']} thread(s), best of "
        f"{result['timing_rounds']} round-robin rounds; wall {result['wall_seconds'] / 60:.1f} min",
        "",
        f"| step | input | params (M) | GMACs | MB | eager ms b1 | eager ms b{b} | ORT ms b1 | "
        f"ORT ms b{b} | test acc % | before FT % | note |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in result["rows"]:
        before = r.get("acc_before_ft")
        lines.append(
            f"| {r['step']} | {r['img_size']} | {r['params'] / 1e6:.3f} | {r['macs'] / 1e9:.4f} | "
            f"{r['weight_mb']:.1f} | {fmt(value(r, 'eager_b1', keys), '.2f')} | "
            f"{fmt(value(r, 'eager_bB', keys), '.1f')} | {fmt(value(r, 'ort_b1', keys), '.2f')} | "
            f"{fmt(value(r, 'ort_bB', keys), '.1f')} | {100 * r['test_acc']:.1f} | "
            f"{fmt(None if before is None else 100 * before, '.1f', '')} | {r.get('note', '')} |"
        )
    s = summary(result)
    goal = s["goal"]
    lines += [
        "",
        f"start -> final: MACs / {fmt(s['macs_x'], '.2f')}, params / {fmt(s['params_x'], '.2f')}, "
        f"eager latency / {fmt(s['eager_b1_x'], '.2f')} (batch 1) and "
        f"/ {fmt(s['eager_bB_x'], '.2f')} (batch {b}), ORT / {fmt(s['ort_b1_x'], '.2f')} "
        f"(batch 1) and / {fmt(s['ort_bB_x'], '.2f')} (batch {b}), accuracy "
        f"{s['acc_points']:+.1f} points.",
        f"goal (>= 4x MACs, >= 3x eager latency at batch 1 and {b}, <= 1 point lost): "
        f"MACs {'met' if goal['macs_4x'] else 'NOT met'}, latency "
        f"{'met' if goal['latency_3x_eager'] else 'NOT met'}, accuracy "
        f"{'met' if goal['accuracy_within_1pt'] else 'NOT met'}.",
    ]
    if "before_int8" in s:
        f = s["before_int8"]
        lines.append(
            f"without the int8 step (the float model before it): MACs / {fmt(f['macs_x'], '.2f')}, "
            f"eager latency / {fmt(f['eager_b1_x'], '.2f')} (batch 1) and "
            f"/ {fmt(f['eager_bB_x'], '.2f')} (batch {b}), ORT / {fmt(f['ort_b1_x'], '.2f')} "
            f"(batch 1), accuracy {f['acc_points']:+.1f} points."
        )
    notes = [f"{r['step']}: {r['ort_note']}" for r in result["rows"] if r.get("ort_note")]
    if notes:
        lines += ["", "ORT n/a: " + "; ".join(notes)]
    return "\n".join(lines) + "\n"


def write_csv(result: dict[str, Any], path: Path) -> None:
    keys = batch_keys(result)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        header = [keys.get(c, c) for c in COLUMNS]
        writer.writerow(header)
        for r in result["rows"]:
            writer.writerow([r.get(h, "") for h in header])


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys, rows, b = batch_keys(result), result["rows"], result["latency_batch"]
    names = [r["step"] for r in rows]
    x = range(len(rows))
    fig, axes = plt.subplots(1, 4, figsize=(16, 4))
    latency = [("eager_b1", 1, "eager b1"), ("eager_bB", 1, f"eager b{b}"),
               ("ort_b1", 1, "ORT b1"), ("ort_bB", 1, f"ORT b{b}")]  # fmt: skip
    panels = (
        (axes[0], [("params", 1e-6, "params (M)")], "parameters (M)"),
        (axes[1], [("macs", 1e-9, "GMACs")], "GMACs per image"),
        (axes[2], latency, "ms per call"),
        (axes[3], [("test_acc", 100, "test acc")], "test accuracy (%)"),
    )
    for ax, series, title in panels:
        for key, scale, label in series:
            ys = [value(r, key, keys) for r in rows]
            if all(y is None for y in ys):
                continue
            ax.plot(x, [None if y is None else y * scale for y in ys], "o-", label=label)
        ax.set_xticks(list(x), names, rotation=45, ha="right", fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        if len(series) > 1:
            ax.set_yscale("log")
            ax.legend(fontsize=7)
    fig.suptitle(f"lightattn shrink on {result['data']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(result: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    result["summary"] = summary(result)
    (out / "shrink.json").write_text(json.dumps(result, indent=2, default=str))
    write_csv(result, out / "shrink.csv")
    (out / "shrink.md").write_text(markdown(result))
    plot(result, out / "shrink.png")
