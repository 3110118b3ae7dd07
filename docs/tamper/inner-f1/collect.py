"""Collect the per-inner fine-tune runs of run.sh into results.json and a markdown table,
with the latency of each variant from ../efficiency.json (one process, interleaved).

Usage: python docs/tamper/inner-f1/collect.py RUNS_DIR [--out docs/tamper/inner-f1]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
DANET = "none (DANet N×N)"


def latency(label: str) -> dict[str, float]:
    rows = json.loads((HERE.parent / "efficiency.json").read_text())["rows"]
    row = next(r for r in rows if r["label"] == (DANET if label == "none" else label))
    return {f"ms_{s}": row["sizes"][s]["ms"] for s in ("512", "1024")}


def collect(runs: Path) -> dict[str, dict[str, float]]:
    out = {}
    for run in sorted(p for p in runs.iterdir() if (p / "casia" / "eval.json").is_file()):
        summary = json.loads((run / "summary.json").read_text())
        casia = json.loads((run / "casia" / "eval.json").read_text())
        out[run.name] = {
            "synthetic_val_f1": summary["final_val_f1"],
            "casia_f1": casia["f1"],
            "casia_best_threshold_f1": casia["f1_best_fixed"],
            "casia_auc": casia["auc"],
            "train_seconds": summary["seconds"],
            **latency(run.name),
        }
    return out


def table(rows: dict[str, dict[str, float]]) -> str:
    lines = [
        "| inner | synthetic val F1 | CASIA F1 @0.5 | CASIA best-thr F1 | CASIA AUC "
        "| ms 512² | ms 1024² | CASIA F1 per 100 ms (512²) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    order = sorted(rows, key=lambda k: -rows[k]["casia_f1"])
    for name in order:
        r = rows[name]
        label = "none (DANet N×N)" if name == "none" else name
        lines.append(
            f"| {label} | {r['synthetic_val_f1']:.3f} | {r['casia_f1']:.3f} "
            f"| {r['casia_best_threshold_f1']:.3f} | {r['casia_auc']:.3f} | {r['ms_512']:.0f} "
            f"| {r['ms_1024']:.0f} | {100 * r['casia_f1'] / r['ms_512']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("runs", type=Path)
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    rows = collect(args.runs)
    (args.out / "results.json").write_text(json.dumps(rows, indent=2) + "\n")
    (args.out / "table.md").write_text(table(rows))
    print(table(rows), end="")


if __name__ == "__main__":
    main()
