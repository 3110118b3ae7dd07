"""Evaluate a tamper model on a real data set (IMDL-BenCo metrics) and report it beside the
published CASIA v1 pixel-F1 figures."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from .data import TamperDataset
from .metrics import evaluate, pixel_f1
from .predict import DEFAULT_MAX_SIDE, overlay_image, predict_array

# Published pixel F1 on CASIA v1 at the fixed 0.5 threshold, models trained on CASIA v2 (the
# figures collected in the project's issue 12; not re-measured here).
PUBLISHED_CASIA1_F1: dict[str, float] = {
    "ManTra-Net": 0.125,
    "PSCC-Net": 0.378,
    "MVSS-Net": 0.534,
    "CAT-Net": 0.581,
    "TruFor": 0.721,
}


@dataclass
class ImagePrediction:
    """One evaluated image: uint8 RGB (H, W, 3), uint8 {0, 1} mask (H, W), float32
    probability (H, W) and the image score."""

    name: str
    image: np.ndarray
    mask: np.ndarray
    prob: np.ndarray
    score: float


def predict_dataset(
    model: nn.Module, data_root: str | Path, max_side: int = DEFAULT_MAX_SIDE
) -> tuple[list[ImagePrediction], float]:
    """Predict every image of the TamperDataset at ``data_root`` at its native size;
    returns the predictions in dataset order and the seconds of model inference."""
    dataset = TamperDataset(data_root)
    model.eval()
    out: list[ImagePrediction] = []
    seconds = 0.0
    for i, name in enumerate(dataset.names):
        img, mask = dataset.arrays(i)
        start = time.perf_counter()
        prob, score = predict_array(model, img, max_side)
        seconds += time.perf_counter() - start
        out.append(ImagePrediction(name, img, mask, prob, score))
    return out, seconds


def metrics_of(preds: list[ImagePrediction]) -> dict[str, float]:
    """:func:`lightattn.tamper.metrics.evaluate` over the predictions."""
    return evaluate([p.prob for p in preds], [p.mask for p in preds], [p.score for p in preds])


def evaluate_model(
    model: nn.Module, data_root: str | Path, max_side: int = DEFAULT_MAX_SIDE
) -> dict[str, Any]:
    """Predict every image of the TamperDataset at ``data_root`` at its native size and
    return the metrics of :func:`lightattn.tamper.metrics.evaluate` plus ``img_per_s``
    (images per second of model inference, loading excluded), ``seconds`` and ``data``."""
    preds, seconds = predict_dataset(model, data_root, max_side)
    result: dict[str, Any] = dict(metrics_of(preds))
    result.update(
        data=str(data_root),
        seconds=seconds,
        img_per_s=len(preds) / seconds if seconds > 0 else float("nan"),
    )
    return result


def figure_rows(preds: list[ImagePrediction], n: int) -> list[tuple[ImagePrediction, float]]:
    """``n`` tampered images evenly spaced over the ranking by pixel F1 (best first, worst
    last), so the picture shows the spread rather than the best cases; (prediction, F1)."""
    if n < 1:
        raise ValueError(f"n={n} must be >= 1")
    scored = [(p, pixel_f1(p.prob, p.mask)) for p in preds if p.mask.any()]
    if not scored:
        raise ValueError("no tampered image (non-empty ground truth) to show")
    scored.sort(key=lambda t: -t[1])
    picks = np.unique(np.rint(np.linspace(0, len(scored) - 1, min(n, len(scored)))).astype(int))
    return [scored[i] for i in picks]


def prediction_figure(
    preds: list[ImagePrediction], path: str | Path, n: int = 5, title: str = ""
) -> Path:
    """A PNG with one row per image of :func:`figure_rows`: image | ground truth |
    predicted probability | overlay, the image's name and pixel F1 @0.5 above the row."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = figure_rows(preds, n)
    fig = Figure(figsize=(10, 2.3 * len(rows) + 0.6), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(rows), 4, squeeze=False)
    heads = ("image", "ground truth", "predicted probability", "overlay (red = tampered)")
    for r, (p, f1) in enumerate(rows):
        panels = (p.image, p.mask, p.prob, np.asarray(overlay_image(p.image, p.prob)))
        for c, panel in enumerate(panels):
            ax = axes[r, c]
            gray = {"cmap": "gray", "vmin": 0, "vmax": 1} if panel.ndim == 2 else {}
            ax.imshow(panel, **gray)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(heads[c], fontsize=10)
        axes[r, 0].set_ylabel(f"F1 {f1:.3f}\nscore {p.score:.2f}", fontsize=9)
        axes[r, 1].set_xlabel(p.name, fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    return out


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
