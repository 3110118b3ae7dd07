"""Tamper-mask prediction on image files: masks, overlays and image scores.

For each input ``<stem>`` :func:`predict_files` writes into ``out_dir``:

* ``<stem>_mask.png``: 8-bit grayscale, tamper probability x 255, exactly the input's size;
* ``<stem>_overlay.png``: the image with the mask tinted red (alpha = 0.6 x probability);

and ``scores.csv`` with one row per readable input: name, file, score (sigmoid of the image
logit), max_prob (highest pixel probability), tampered_fraction (pixels with prob > 0.5).

Inputs: anything Pillow reads (JPEG, PNG, TIFF, BMP, WebP, ...); grayscale, RGBA, palette and
16-bit images are converted to 8-bit RGB (:func:`lightattn.tamper.data.load_image`). Images
whose longer side is at most ``max_side`` run whole (the network takes any size). Larger
images run in overlapping ``max_side`` x ``max_side`` tiles (overlap ``max_side // 4``),
blended with linear ramps over the overlaps; the image score is then the highest tile score
(a tampered region anywhere makes the image tampered). Two inputs with the same stem get
``<stem>``, ``<stem>_2``, ... A file that cannot be read is reported (one line naming it)
and skipped; the others are still processed. No output path may equal an input path.

Videos (``.mp4``, ``.avi``, ``.mov``, ``.mkv``, read with OpenCV) are streamed one frame at a
time (memory independent of length) into ``<stem>_mask.mp4`` (mp4v; the codec may round odd
frame sizes down to even) and ``<stem>_scores.csv`` (frame, score, max_prob,
tampered_fraction); their ``scores.csv`` row holds the highest frame score, the highest pixel
probability and the mean tampered fraction.
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from .data import load_image

DEFAULT_CHECKPOINT = "stdc_tamper_default.safetensors"
DEFAULT_MAX_SIDE = 2048
OVERLAY_ALPHA = 0.6
SCORE_FIELDS = ("name", "file", "score", "max_prob", "tampered_fraction")
VIDEO_EXTS = {".mp4", ".avi", ".mov", ".mkv"}


def default_checkpoint() -> Path | None:
    """The checkpoint shipped with the package, or None while none is shipped."""
    path = Path(__file__).parent / "weights" / DEFAULT_CHECKPOINT
    return path if path.is_file() else None


def _starts(length: int, tile: int, stride: int) -> list[int]:
    """Tile start offsets covering ``[0, length)``; the last tile ends at ``length``."""
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, stride))
    return starts + [length - tile]


def _ramp(length: int, overlap: int) -> np.ndarray:
    """1-D blending weights: rising over the first ``overlap`` samples, falling over the
    last, never 0 (so a pixel covered by one tile only keeps its value)."""
    w = np.ones(length, np.float64)
    if overlap > 0 and length > 2 * overlap:
        ramp = (np.arange(overlap) + 1.0) / (overlap + 1.0)
        w[:overlap], w[-overlap:] = ramp, ramp[::-1]
    return w


def _to_tensor(rgb: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, 3) -> float (3, H, W) in [0, 1]."""
    return torch.from_numpy(np.array(rgb, dtype=np.uint8)).permute(2, 0, 1).float() / 255.0


@torch.inference_mode()
def _run(model: nn.Module, batch: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Same-size RGB crops -> (probabilities (B, H, W), image scores (B,))."""
    device = next(model.parameters()).device
    x = torch.stack([_to_tensor(a) for a in batch]).to(device)
    out = model(x)
    prob = torch.sigmoid(out["mask_logits"][:, 0].float()).cpu().numpy()
    score = torch.sigmoid(out["score_logits"].float()).cpu().numpy()
    return prob, score


def predict_array(
    model: nn.Module, rgb: np.ndarray, max_side: int = DEFAULT_MAX_SIDE, batch_size: int = 1
) -> tuple[np.ndarray, float]:
    """One uint8 RGB image (H, W, 3) -> (float32 tamper probability (H, W), image score).

    Above ``max_side`` the image is tiled (see the module doc); ``batch_size`` tiles run at
    once.
    """
    if max_side < 32:
        raise ValueError(f"max_side={max_side} must be >= 32")
    h, w = rgb.shape[:2]
    if max(h, w) <= max_side:
        prob, score = _run(model, [rgb])
        return prob[0].astype(np.float32), float(score[0])
    th, tw = min(h, max_side), min(w, max_side)
    overlap = max_side // 4
    boxes = [(y, x) for y in _starts(h, th, th - overlap) for x in _starts(w, tw, tw - overlap)]
    weight = np.outer(_ramp(th, overlap if h > th else 0), _ramp(tw, overlap if w > tw else 0))
    acc = np.zeros((h, w), np.float64)
    norm = np.zeros((h, w), np.float64)
    best = 0.0
    for i in range(0, len(boxes), max(1, batch_size)):
        chunk = boxes[i : i + max(1, batch_size)]
        probs, scores = _run(model, [rgb[y : y + th, x : x + tw] for y, x in chunk])
        for (y, x), p in zip(chunk, probs, strict=True):
            acc[y : y + th, x : x + tw] += p * weight
            norm[y : y + th, x : x + tw] += weight
        best = max(best, float(scores.max()))
    return (acc / norm).astype(np.float32), best


def mask_image(prob: np.ndarray) -> Image.Image:
    """Probability (H, W) -> 8-bit grayscale PNG-ready image (prob x 255, rounded)."""
    return Image.fromarray(np.clip(np.rint(prob * 255.0), 0, 255).astype(np.uint8), "L")


def overlay_image(rgb: np.ndarray, prob: np.ndarray, alpha: float = OVERLAY_ALPHA) -> Image.Image:
    """The image with tampered pixels tinted red in proportion to their probability."""
    a = (alpha * np.clip(prob, 0.0, 1.0))[..., None]
    red = np.array([255.0, 0.0, 0.0])
    out = rgb.astype(np.float64) * (1.0 - a) + red * a
    return Image.fromarray(np.clip(np.rint(out), 0, 255).astype(np.uint8), "RGB")


def output_names(paths: Sequence[Path]) -> list[str]:
    """An output stem per input: its stem, with ``_2``, ``_3``... for repeated stems."""
    seen: dict[str, int] = {}
    names = []
    for p in paths:
        n = seen.get(p.stem, 0) + 1
        seen[p.stem] = n
        names.append(p.stem if n == 1 else f"{p.stem}_{n}")
    return names


def check_no_overwrite(paths: Sequence[Path], out_dir: Path, names: Sequence[str]) -> None:
    """ValueError naming the file when an output would replace one of the inputs."""
    inputs = {p.resolve(): p for p in paths}
    outputs = [out_dir / "scores.csv"]
    for n in names:
        outputs += [out_dir / f"{n}_mask.png", out_dir / f"{n}_overlay.png"]
        outputs += [out_dir / f"{n}_mask.mp4", out_dir / f"{n}_scores.csv"]
    for o in outputs:
        if o.resolve() in inputs:
            raise ValueError(
                f"refusing to overwrite input {inputs[o.resolve()]} with an output; "
                "choose another --out folder"
            )


def _stderr(line: str) -> None:
    sys.stderr.write(line.rstrip() + "\n")


def predict_files(
    model: nn.Module,
    paths: Sequence[str | Path],
    out_dir: str | Path,
    max_side: int = DEFAULT_MAX_SIDE,
    batch_size: int = 1,
    warn: Callable[[str], None] | None = _stderr,
) -> list[dict]:
    """Predict every file in ``paths`` and write masks, overlays and ``scores.csv`` to
    ``out_dir`` (created). Returns one dict per input, in order: the ``scores.csv`` fields,
    or ``{"file", "error"}`` for a file that could not be read (also passed to ``warn``).

    Raises ValueError (before writing anything) if an output would overwrite an input.
    """
    files = [Path(p) for p in paths]
    out = Path(out_dir)
    names = output_names(files)
    check_no_overwrite(files, out, names)
    out.mkdir(parents=True, exist_ok=True)
    model.eval()
    results: list[dict] = []
    for path, name in zip(files, names, strict=True):
        try:
            if path.suffix.lower() in VIDEO_EXTS:
                results.append(predict_video(model, path, out, name, max_side, batch_size))
                continue
            rgb = load_image(path)
        except (ValueError, OSError) as err:
            msg = str(err) if str(path) in str(err) else f"{path}: {err}"
            if warn is not None:
                warn(f"lightattn tamper predict: skipped {msg}")
            results.append({"file": str(path), "error": msg})
            continue
        prob, score = predict_array(model, rgb, max_side, batch_size)
        mask_image(prob).save(out / f"{name}_mask.png")
        overlay_image(rgb, prob).save(out / f"{name}_overlay.png")
        results.append(
            {
                "name": name,
                "file": str(path),
                "score": score,
                "max_prob": float(prob.max()),
                "tampered_fraction": float((prob > 0.5).mean()),
            }
        )
    write_scores(results, out / "scores.csv")
    return results


def write_scores(results: Sequence[dict], path: Path) -> None:
    """``scores.csv``: one row per successful prediction (errors left out)."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(SCORE_FIELDS)
        for r in results:
            if "error" in r:
                continue
            writer.writerow(
                [r["name"], r["file"]]
                + [f"{r[k]:.6f}" for k in ("score", "max_prob", "tampered_fraction")]
            )


def _frames(path: Path):
    """(fps, iterator of RGB uint8 frames) of a video, read one frame at a time."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        cap.release()
        raise ValueError(f"{path}: cannot read video")
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0

    def frames():
        try:
            while True:
                ok, bgr = cap.read()
                if not ok:
                    return
                yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        finally:
            cap.release()

    return fps, frames()


def predict_video(
    model: nn.Module,
    path: Path,
    out: Path,
    name: str,
    max_side: int = DEFAULT_MAX_SIDE,
    batch_size: int = 1,
) -> dict:
    """Stream a video frame by frame into ``<name>_mask.mp4`` and ``<name>_scores.csv``;
    returns its ``scores.csv`` row. ValueError naming the file if it has no readable frame."""
    import cv2

    fps, frames = _frames(path)
    writer = None
    rows: list[tuple[int, float, float, float]] = []
    try:
        for i, rgb in enumerate(frames):
            prob, score = predict_array(model, rgb, max_side, batch_size)
            if writer is None:
                fourcc = cv2.VideoWriter_fourcc(*"mp4v")
                size = (rgb.shape[1], rgb.shape[0])
                writer = cv2.VideoWriter(str(out / f"{name}_mask.mp4"), fourcc, fps, size)
            gray = np.asarray(mask_image(prob))
            writer.write(cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR))
            rows.append((i, score, float(prob.max()), float((prob > 0.5).mean())))
    finally:
        if writer is not None:
            writer.release()
    if not rows:
        raise ValueError(f"{path}: cannot read video (no frames)")
    with open(out / f"{name}_scores.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(("frame", "score", "max_prob", "tampered_fraction"))
        w.writerows([r[0], *(f"{v:.6f}" for v in r[1:])] for r in rows)
    return {
        "name": name,
        "file": str(path),
        "score": max(r[1] for r in rows),
        "max_prob": max(r[2] for r in rows),
        "tampered_fraction": float(np.mean([r[3] for r in rows])),
        "frames": len(rows),
    }
