"""Evaluate a tamper model on a real data set (IMDL-BenCo metrics) and report it beside the
published CASIA v1 pixel-F1 figures."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from torch import nn

from .data import TamperDataset
from .metrics import evaluate
from .predict import DEFAULT_MAX_SIDE, predict_array

# Published pixel F1 on CASIA v1 at the fixed 0.5 threshold, models trained on CASIA v2 (the
# figures collected in the project's issue 12; not re-measured here).
PUBLISHED_CASIA1_F1: dict[str, float] = {
    "ManTra-Net": 0.125,
    "PSCC-Net": 0.378,
    "MVSS-Net": 0.534,
    "CAT-Net": 0.581,
    "TruFor": 0.721,
}


def evaluate_model(
    model: nn.Module, data_root: str | Path, max_side: int = DEFAULT_MAX_SIDE
) -> dict[str, Any]:
    """Predict every image of the TamperDataset at ``data_root`` at its native size and
    return the metrics of :func:`lightattn.tamper.metrics.evaluate` plus ``img_per_s``
    (images per second of model inference, loading excluded), ``seconds`` and ``data``."""
    dataset = TamperDataset(data_root)
    model.eval()
    probs, gts, scores = [], [], []
    seconds = 0.0
    for i in range(len(dataset)):
        img, mask = dataset.arrays(i)
        start = time.perf_counter()
        prob, score = predict_array(model, img, max_side)
        seconds += time.perf_counter() - start
        probs.append(prob)
        gts.append(mask)
        scores.append(score)
    result: dict[str, Any] = dict(evaluate(probs, gts, scores))
    result.update(
        data=str(data_root),
        seconds=seconds,
        img_per_s=len(dataset) / seconds if seconds > 0 else float("nan"),
    )
    return result


def _fmt(value: Any) -> str:
    """A metric for the table: 3 decimals, '–' for NaN/None."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.3f}"


def markdown_table(result: dict[str, Any], label: str = "stdc_tamper (this)") -> str:
    """Our pixel F1/IoU/AUC and img/s beside the published CASIA v1 pixel-F1 rows."""
    lines = [
        "| model | pixel F1 | IoU | pixel AUC | best-thr F1 | img/s (this CPU) |",
        "|---|---:|---:|---:|---:|---:|",
        f"| {label} | {_fmt(result.get('f1'))} | {_fmt(result.get('iou'))} | "
        f"{_fmt(result.get('auc'))} | {_fmt(result.get('f1_best_fixed'))} | "
        f"{result.get('img_per_s', float('nan')):.1f} |",
    ]
    for name, f1 in PUBLISHED_CASIA1_F1.items():
        lines.append(f"| {name}¹ | {f1:.3f} | – | – | – | – |")
    n = int(result.get("n_images", 0))
    lines += [
        "",
        f"Our row: {n} images of `{result.get('data', '?')}`, per-image pixel F1 at the "
        "fixed 0.5 threshold (IMDL-BenCo protocol); img/s is model inference only, batch 1.",
        "",
        "¹ Published pixel F1 on CASIA v1 of models trained on CASIA v2 (not re-measured "
        "here): not the same protocol as our row (different training data, "
        "and our figure may come from a subset of CASIA v1), so the comparison is indicative "
        "only.",
    ]
    return "\n".join(lines) + "\n"


def _json_safe(value: Any) -> Any:
    """NaN/inf floats -> None, so the JSON file stays standard."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_report(result: dict[str, Any], out_dir: str | Path, label: str | None = None) -> Path:
    """Write ``eval.md`` (the table) and ``eval.json`` into ``out_dir``; returns the .md."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md = out / "eval.md"
    md.write_text(markdown_table(result, *([label] if label else [])))
    safe = {k: _json_safe(v) for k, v in result.items()}
    safe["published_casia1_f1"] = PUBLISHED_CASIA1_F1
    (out / "eval.json").write_text(json.dumps(safe, indent=2) + "\n")
    return md
