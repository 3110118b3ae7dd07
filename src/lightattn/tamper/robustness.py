"""Robustness of a tamper model to common post-processing: pixel F1 (IMDL-BenCo, fixed 0.5
threshold) and pixel AUC of the test images after JPEG compression, Gaussian blur, Gaussian
noise and down-scaling, one curve per perturbation.

Only the test images are degraded, the model is unchanged. Protocol per perturbation:

* ``jpeg``: Pillow JPEG at the given quality (Pillow's default 4:2:0 chroma subsampling);
* ``blur``: OpenCV Gaussian blur with standard deviation sigma pixels (0: unchanged);
* ``noise``: additive Gaussian noise of standard deviation sigma on the 0-255 scale, rounded
  and clipped; the noise pattern of image ``i`` is drawn from ``default_rng([seed, i])``, so
  the levels differ only in amplitude (0: unchanged);
* ``resize``: the image scaled by the factor with Pillow's bilinear filter (antialiased when
  shrinking) and its ground truth with nearest neighbour; the prediction is scored **at the
  degraded size**, against the resized ground truth (nothing is mapped back).

The clean (undegraded) metrics are reported beside the curves.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image
from torch import nn

from .data import TamperDataset
from .metrics import evaluate
from .predict import DEFAULT_MAX_SIDE, predict_array

METRICS = ("f1", "iou", "auc", "f1_best_fixed")


@dataclass(frozen=True)
class Perturbation:
    """A named degradation with its levels, from mildest to strongest; ``label`` names the
    x axis of its plot."""

    name: str
    label: str
    levels: tuple[float, ...]


PERTURBATIONS: dict[str, Perturbation] = {
    p.name: p
    for p in (
        Perturbation("jpeg", "JPEG quality", (100, 90, 80, 70, 60, 50)),
        Perturbation("blur", "Gaussian blur sigma (px)", (0.0, 0.5, 1.0, 1.5, 2.0)),
        Perturbation("noise", "Gaussian noise sigma (0-255)", (0.0, 3.0, 6.0, 9.0, 12.0, 15.0)),
        Perturbation("resize", "resize scale", (1.0, 0.9, 0.8, 0.7, 0.6, 0.5)),
    )
}


def _check_rgb(rgb: np.ndarray) -> None:
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3:
        raise ValueError(f"rgb must be a uint8 (H, W, 3) array, got {getattr(rgb, 'shape', rgb)}")


def jpeg(rgb: np.ndarray, quality: float) -> np.ndarray:
    """uint8 RGB (H, W, 3) -> the same after a JPEG round trip at ``quality`` (1-100)."""
    _check_rgb(rgb)
    if not 1 <= quality <= 100:
        raise ValueError(f"quality={quality} must be in 1..100")
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=int(quality))
    buf.seek(0)
    with Image.open(buf) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)


def gaussian_blur(rgb: np.ndarray, sigma: float) -> np.ndarray:
    """uint8 RGB (H, W, 3) blurred with a Gaussian of ``sigma`` pixels (0: a copy)."""
    _check_rgb(rgb)
    if sigma < 0:
        raise ValueError(f"sigma={sigma} must be >= 0")
    if sigma == 0:
        return rgb.copy()
    return cv2.GaussianBlur(rgb, (0, 0), sigmaX=float(sigma))


def gaussian_noise(rgb: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """uint8 RGB (H, W, 3) plus N(0, sigma²) noise on the 0-255 scale, rounded and clipped."""
    _check_rgb(rgb)
    if sigma < 0:
        raise ValueError(f"sigma={sigma} must be >= 0")
    noise = rng.standard_normal(rgb.shape)
    if sigma == 0:
        return rgb.copy()
    return np.clip(np.rint(rgb + sigma * noise), 0, 255).astype(np.uint8)


def rescale(rgb: np.ndarray, mask: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 RGB (H, W, 3), mask (H, W)) scaled by ``scale`` in (0, 1] to
    (round(H·scale), round(W·scale)): the image bilinear (antialiased), the mask nearest."""
    _check_rgb(rgb)
    if not 0 < scale <= 1:
        raise ValueError(f"scale={scale} must be in (0, 1]")
    h, w = rgb.shape[:2]
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    if size == (w, h):
        return rgb.copy(), mask.copy()
    img = np.asarray(Image.fromarray(rgb).resize(size, Image.BILINEAR))
    small = np.asarray(Image.fromarray(mask).resize(size, Image.NEAREST))
    return img, small


def perturb(
    name: str, rgb: np.ndarray, mask: np.ndarray, level: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Apply perturbation ``name`` at ``level`` -> (image, ground truth at its size)."""
    if name == "jpeg":
        return jpeg(rgb, level), mask
    if name == "blur":
        return gaussian_blur(rgb, level), mask
    if name == "noise":
        return gaussian_noise(rgb, level, rng), mask
    if name == "resize":
        return rescale(rgb, mask, level)
    raise ValueError(f"perturbation={name!r} is unknown; known: {sorted(PERTURBATIONS)}")


def check_names(names: Sequence[str] | None) -> list[str]:
    """The perturbations to run (all when None); ValueError naming an unknown one."""
    if names is None:
        return list(PERTURBATIONS)
    unknown = [n for n in names if n not in PERTURBATIONS]
    if unknown or not names:
        raise ValueError(f"perturbations={list(names)!r}: choose from {sorted(PERTURBATIONS)}")
    return list(dict.fromkeys(names))


def _score(
    model: nn.Module, pairs: list[tuple[np.ndarray, np.ndarray]], max_side: int
) -> dict[str, float]:
    """Metrics of the model's predictions on (image, mask) pairs."""
    probs, scores = [], []
    for img, _ in pairs:
        prob, score = predict_array(model, img, max_side)
        probs.append(prob)
        scores.append(score)
    return evaluate(probs, [m for _, m in pairs], scores)


def robustness(
    model: nn.Module,
    data_root: str | Path,
    perturbations: Sequence[str] | None = None,
    max_side: int = DEFAULT_MAX_SIDE,
    seed: int = 0,
) -> dict[str, Any]:
    """Metrics of ``model`` on the data set at ``data_root``, clean and under each
    perturbation level (see the module doc). Returns ``{"data", "n_images", "seed",
    "clean": metrics, "curves": {name: [{"level", **metrics}, ...]}, "protocol": {...}}``
    with the metrics of :func:`lightattn.tamper.metrics.evaluate`."""
    names = check_names(perturbations)
    dataset = TamperDataset(data_root)
    originals = [dataset.arrays(i) for i in range(len(dataset))]
    model.eval()
    curves: dict[str, list[dict[str, float]]] = {}
    for name in names:
        rows = []
        for level in PERTURBATIONS[name].levels:
            pairs = [
                perturb(name, img, mask, level, np.random.default_rng([seed, i]))
                for i, (img, mask) in enumerate(originals)
            ]
            rows.append({"level": float(level), **_score(model, pairs, max_side)})
        curves[name] = rows
    return {
        "data": str(data_root),
        "n_images": len(originals),
        "seed": seed,
        "clean": _score(model, originals, max_side),
        "curves": curves,
        "protocol": {n: PERTURBATIONS[n].label for n in names}
        | {"resize_scoring": "at the degraded size, ground truth resized with nearest"},
    }


def _safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_safe(v) for v in value]
    return value


def write_csv(result: dict[str, Any], path: Path) -> None:
    """One row per (perturbation, level), the clean row first (perturbation 'none')."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["perturbation", "level", *METRICS])
        rows = [("none", "", result["clean"])]
        rows += [(n, r["level"], r) for n, curve in result["curves"].items() for r in curve]
        for name, level, m in rows:
            w.writerow([name, level, *(f"{m.get(k, float('nan')):.4f}" for k in METRICS)])


def plot(result: dict[str, Any], path: Path, title: str = "") -> Path:
    """A 2 x 2 figure (one panel per perturbation): pixel F1 @0.5 and pixel AUC against the
    level, the clean values as dotted lines."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = list(result["curves"])
    cols = 2 if len(names) > 1 else 1
    rows = math.ceil(len(names) / cols)
    fig = Figure(figsize=(5 * cols, 3.6 * rows + 0.5), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    clean = result["clean"]
    for ax, name in zip(axes, names, strict=False):
        curve = result["curves"][name]
        x = [r["level"] for r in curve]
        ax.plot(x, [r["f1"] for r in curve], "o-", color="C3", label="pixel F1 @0.5")
        ax.plot(x, [r["auc"] for r in curve], "s--", color="C0", label="pixel AUC")
        ax.axhline(clean["f1"], color="C3", ls=":", lw=1, label="F1, clean")
        ax.axhline(clean["auc"], color="C0", ls=":", lw=1, label="AUC, clean")
        ax.set_xlabel(PERTURBATIONS[name].label)
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        if name in ("jpeg", "resize"):
            ax.invert_xaxis()  # mildest on the left
        ax.set_title(name)
    for ax in axes[len(names) :]:
        ax.set_visible(False)
    axes[0].legend(fontsize=8, loc="center left")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    return path


def write_robustness(result: dict[str, Any], out_dir: str | Path, title: str = "") -> list[Path]:
    """Write robustness.json, robustness.csv and robustness.png into ``out_dir`` (created)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "robustness.json", out / "robustness.csv", out / "robustness.png"]
    paths[0].write_text(json.dumps(_safe(result), indent=2) + "\n")
    write_csv(result, paths[1])
    plot(result, paths[2], title)
    return paths
