"""Tamper-localization metrics following the IMDL-BenCo protocol (Ma et al., NeurIPS 2024).

Conventions (checked against ``IMDLBenCo/evaluation/{F1,IOU,AUC}.py`` of scu-zjz/IMDLBenCo):

* **Binarization is strict**: a pixel is predicted tampered when ``prob > threshold``; a
  probability of exactly 0.5 is *authentic* at the default threshold (IMDL-BenCo's
  ``(predict > threshold).float()``).
* **Per-image pixel F1** = ``2 TP / (2 TP + FP + FN)``, computed per image and then averaged
  over images. When ``TP == 0`` it is 0, *including* the case where ground truth and
  prediction are both empty: IMDL-BenCo's ``precision * recall / (... + 1e-8)`` formula gives
  0 there, and we return exactly 0. IoU = ``TP / (TP + FP + FN)``, 0 for an empty union.
* **Which images enter the pixel means**: only images whose ground truth is non-empty
  (tampered images). An authentic image can score nothing but 0 under the rule above, so
  pixel metrics are reported on the tampered images, and authentic images are judged by
  the image-level metrics (IMDL-BenCo's pixel-level test sets are manipulated-only).
* **Pixel AUC** (sklearn ``roc_auc_score``) is per image and averaged; it is undefined for a
  single-class ground truth (empty or all-tampered) and such images are left out of the mean
  (IMDL-BenCo returns 0.0 for an empty mask; we return NaN and skip it instead).
* **Best-threshold F1** comes in two flavours, both reported:
  ``f1_best_per_image`` (each image at its own best threshold, an oracle upper bound, as in
  the "optimal threshold" F1 of the literature) and ``f1_best_fixed`` (one threshold for the
  whole dataset chosen from the grid 0.00, 0.01, ..., 1.00 to maximize the mean per-image F1;
  the chosen value is returned as ``best_threshold``).
* **Image level**: label = ground truth non-empty; score = the model's image score, or the
  maximum pixel probability when none is given; accuracy uses ``score > 0.5``; AUC and
  accuracy are reported only when both authentic and tampered images are present.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

THRESHOLD = 0.5
GRID = np.round(np.linspace(0.0, 1.0, 101), 2)


def as_numpy(x: Any) -> np.ndarray:
    """A float64 numpy array from a numpy array, a torch tensor or a nested sequence."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def _pair(prob: Any, gt: Any) -> tuple[np.ndarray, np.ndarray]:
    """Flattened (prob, bool gt) with matching sizes; gt is tampered where > 0.5."""
    p, g = as_numpy(prob).ravel(), as_numpy(gt).ravel() > 0.5
    if p.shape != g.shape:
        raise ValueError(f"prediction has {p.size} pixels but ground truth has {g.size}")
    return p, g


def confusion(prob: Any, gt: Any, threshold: float = THRESHOLD) -> tuple[int, int, int, int]:
    """(TP, FP, FN, TN) of ``prob > threshold`` against the binary ground truth."""
    p, g = _pair(prob, gt)
    pred = p > threshold
    tp = int(np.sum(pred & g))
    fp = int(np.sum(pred & ~g))
    fn = int(np.sum(~pred & g))
    return tp, fp, fn, int(p.size - tp - fp - fn)


def _f1(tp: float, fp: float, fn: float) -> float:
    """2TP / (2TP + FP + FN), 0 when TP is 0."""
    return 0.0 if tp == 0 else 2.0 * tp / (2.0 * tp + fp + fn)


def pixel_f1(prob: Any, gt: Any, threshold: float = THRESHOLD) -> float:
    """Pixel F1 of one image at ``threshold`` (strict ``>``); 0 when both masks are empty."""
    tp, fp, fn, _ = confusion(prob, gt, threshold)
    return _f1(tp, fp, fn)


def pixel_iou(prob: Any, gt: Any, threshold: float = THRESHOLD) -> float:
    """Pixel IoU of one image at ``threshold`` (strict ``>``); 0 for an empty union."""
    tp, fp, fn, _ = confusion(prob, gt, threshold)
    return 0.0 if tp == 0 else tp / (tp + fp + fn)


def pixel_auc(prob: Any, gt: Any) -> float:
    """Pixel ROC AUC of one image; NaN when the ground truth has a single class."""
    p, g = _pair(prob, gt)
    if g.all() or not g.any():
        return float("nan")
    return float(roc_auc_score(g, p))


def best_f1(prob: Any, gt: Any) -> float:
    """The highest F1 of one image over every threshold (each distinct probability)."""
    p, g = _pair(prob, gt)
    n_pos = int(g.sum())
    if n_pos == 0:
        return 0.0
    order = np.argsort(-p, kind="stable")
    ps, tp = p[order], np.cumsum(g[order])
    k = np.arange(1, p.size + 1)
    last = np.r_[ps[1:] != ps[:-1], True]  # end of each group of equal probabilities
    f1 = 2.0 * tp[last] / (k[last] + n_pos)
    return float(f1.max())


def f1_curve(prob: Any, gt: Any, thresholds: np.ndarray = GRID) -> np.ndarray:
    """F1 of one image at each threshold (strict ``>``), computed with sorted counts."""
    p, g = _pair(prob, gt)
    pos, neg = np.sort(p[g]), np.sort(p[~g])
    tp = pos.size - np.searchsorted(pos, thresholds, side="right")
    fp = neg.size - np.searchsorted(neg, thresholds, side="right")
    fn = pos.size - tp
    denom = 2 * tp + fp + fn
    return np.where(tp > 0, 2.0 * tp / np.maximum(denom, 1), 0.0)


def image_auc(scores: Any, labels: Any) -> float:
    """Image-level ROC AUC; NaN unless both classes are present."""
    s, y = as_numpy(scores).ravel(), as_numpy(labels).ravel() > 0.5
    if y.all() or not y.any():
        return float("nan")
    return float(roc_auc_score(y, s))


def image_accuracy(scores: Any, labels: Any, threshold: float = THRESHOLD) -> float:
    """Image-level accuracy of ``score > threshold`` against the labels (1 = tampered)."""
    s, y = as_numpy(scores).ravel(), as_numpy(labels).ravel() > 0.5
    return float(np.mean((s > threshold) == y))


def _nanmean(values: Sequence[float]) -> float:
    """Mean of the finite values, NaN when there are none."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else float("nan")


def evaluate(
    probs: Sequence[Any],
    gts: Sequence[Any],
    scores: Sequence[float] | None = None,
    threshold: float = THRESHOLD,
) -> dict[str, float]:
    """All metrics over a dataset of (probability map, ground-truth mask) pairs.

    Maps may differ in size between images. Pixel metrics are means over tampered images
    (non-empty ground truth); image metrics need both authentic and tampered images.
    """
    if len(probs) != len(gts) or not probs:
        raise ValueError(f"need equal, non-zero counts: {len(probs)} maps, {len(gts)} masks")
    labels = np.array([bool(np.any(as_numpy(g) > 0.5)) for g in gts])
    if scores is None:
        scores = [float(as_numpy(p).max()) for p in probs]
    out: dict[str, float] = {
        "n_images": float(len(probs)),
        "n_tampered": float(labels.sum()),
        "n_authentic": float((~labels).sum()),
    }
    idx = np.flatnonzero(labels)
    nan = float("nan")
    if idx.size:
        curves = np.stack([f1_curve(probs[i], gts[i]) for i in idx])
        best = int(np.argmax(curves.mean(0)))
        out.update(
            f1=_nanmean([pixel_f1(probs[i], gts[i], threshold) for i in idx]),
            iou=_nanmean([pixel_iou(probs[i], gts[i], threshold) for i in idx]),
            auc=_nanmean([pixel_auc(probs[i], gts[i]) for i in idx]),
            f1_best_per_image=_nanmean([best_f1(probs[i], gts[i]) for i in idx]),
            f1_best_fixed=float(curves.mean(0)[best]),
            best_threshold=float(GRID[best]),
        )
    else:
        out.update(f1=nan, iou=nan, auc=nan, f1_best_per_image=nan, f1_best_fixed=nan)
        out["best_threshold"] = nan
    both = labels.any() and not labels.all()
    out["image_auc"] = image_auc(scores, labels) if both else nan
    out["image_acc"] = image_accuracy(scores, labels, threshold) if both else nan
    return out
