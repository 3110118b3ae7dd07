"""Deterministic synthetic manipulations of real photographs for training tamper localization.

Every sample is a pure function of ``(photos, seed, index)``: :func:`make_sample` draws all
its randomness from ``numpy.random.default_rng([seed, index])``, so any sample can be
regenerated alone. Kinds (probabilities in :data:`KIND_P`):

* ``splice``: a region from another photo (scaled, rotated, colour-matched per channel by
  mean/std) pasted into the host;
* ``copymove``: a region of the host pasted elsewhere in the host (shifted, scaled, rotated);
  the mask marks the pasted (target) region only, as CASIA's ground truth does;
* ``removal``: a region inpainted away (OpenCV Telea or Navier-Stokes);
* ``authentic``: the host crop with an empty mask (about 20%).

Region shapes are object-like: unions of SLIC superpixels, closed Bezier blobs or polygons.
Pasting is hard (no feathering), so before post-processing the mask is exactly the set of
replaced pixels. A region is either resampled (rotated by up to 30 degrees and scaled by
0.7-1.3) or, with probability :data:`PLAIN_SHIFT_P`, moved by a whole-pixel shift only (an
exact copy, as in most CASIA splices); either way it lands at an offset unrelated to the 8x8
JPEG grid. Compression history: each source crop (host and donor alike) is first saved as a
JPEG of its own quality (:func:`camera_jpeg`, as photos come from cameras and the web), so a
pasted region carries another quality and a shifted block grid. Post-processing (all kinds,
authentic included): down-and-up resampling, Gaussian blur, Gaussian noise, JPEG at quality
60-100.

Source photos: any folder (:func:`load_photos`) or, by default, the photographs bundled
with scikit-image and scikit-learn (:func:`default_photos`). :func:`write_synthetic_set`
splits the photos (not the samples) into train and val, so no photo feeds both.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from skimage.segmentation import slic

KINDS = ("splice", "copymove", "removal", "authentic")
KIND_P = (0.35, 0.30, 0.15, 0.20)
PLAIN_SHIFT_P = 0.4  # regions moved by a whole-pixel shift only (no resampling)
CAMERA_JPEG_P = 0.85  # source crops saved as a JPEG before the manipulation
CAMERA_QUALITY = (65, 97)  # range of that first quality (upper end excluded)
PHOTO_EXTS = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp"}
Photos = list[tuple[str, np.ndarray]]


@dataclass
class Sample:
    """One synthetic sample: uint8 image (H, W, 3), uint8 {0, 1} mask (H, W) and provenance."""

    image: np.ndarray
    mask: np.ndarray
    kind: str
    source: str
    donor: str = ""
    host: np.ndarray | None = None  # the source-photo crop before manipulation


def default_photos() -> Photos:
    """The colour photographs that ship with scikit-image and scikit-learn (offline)."""
    import skimage.data as sd
    from sklearn.datasets import load_sample_images

    out = [(n, np.asarray(getattr(sd, n)())[..., :3]) for n in ("astronaut", "coffee", "chelsea")]
    out.append(("rocket", np.asarray(sd.rocket())[..., :3]))
    bunch = load_sample_images()
    pairs = zip(bunch.filenames, bunch.images, strict=True)
    out += [(Path(f).stem, np.asarray(im)) for f, im in pairs]
    return out


def load_photos(folder: str | Path) -> Photos:
    """Every readable colour photo in ``folder`` (sorted by name) as (stem, uint8 RGB)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder}: not a folder")
    out = []
    for p in sorted(folder.iterdir()):
        if p.suffix.lower() in PHOTO_EXTS:
            try:
                with Image.open(p) as im:
                    out.append((p.stem, np.asarray(im.convert("RGB"))))
            except Exception as exc:
                raise ValueError(f"{p}: cannot read image ({exc})") from exc
    if not out:
        raise ValueError(f"{folder}: no photos found")
    return out


def split_photos(names: list[str], val_fraction: float = 0.2, seed: int = 0) -> dict[str, str]:
    """Name -> 'train' or 'val'; at least one of each when there are two or more photos."""
    order = np.random.default_rng([seed, 7919]).permutation(sorted(names))
    n_val = 0 if len(names) < 2 else min(len(names) - 1, max(1, round(val_fraction * len(names))))
    return {str(n): ("val" if i < n_val else "train") for i, n in enumerate(order)}


def _size(size: int | tuple[int, int]) -> tuple[int, int]:
    """(H, W) from an int or a pair."""
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def random_crop(photo: np.ndarray, size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Rescale (so the crop covers 60-100% of the shorter side) and crop to ``size``."""
    h, w = photo.shape[:2]
    base = max(size[0] / h, size[1] / w)
    scale = base * rng.uniform(1.0, 1.0 / 0.6)
    nh, nw = max(size[0], round(h * scale)), max(size[1], round(w * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    img = cv2.resize(np.ascontiguousarray(photo), (nw, nh), interpolation=interp)
    y, x = rng.integers(0, nh - size[0] + 1), rng.integers(0, nw - size[1] + 1)
    return np.ascontiguousarray(img[y : y + size[0], x : x + size[1]])


def polygon_mask(shape: tuple[int, int], rng: np.random.Generator, area: float) -> np.ndarray:
    """A random star-shaped polygon covering about ``area`` of the image."""
    h, w = shape
    n = int(rng.integers(3, 11))
    ang = np.sort(rng.uniform(0, 2 * np.pi, n))
    r = np.sqrt(area * h * w / np.pi) * rng.uniform(0.6, 1.4, n)
    return _fill(shape, rng, ang, r)


def bezier_mask(shape: tuple[int, int], rng: np.random.Generator, area: float) -> np.ndarray:
    """A closed blob of quadratic Bezier arcs through midpoints of random control points."""
    h, w = shape
    n = int(rng.integers(4, 9))
    ang = np.sort(rng.uniform(0, 2 * np.pi, n))
    r = np.sqrt(area * h * w / np.pi) * rng.uniform(0.6, 1.4, n)
    pts = np.stack([r * np.cos(ang), r * np.sin(ang)], 1)
    mids = (pts + np.roll(pts, -1, 0)) / 2
    t = np.linspace(0, 1, 16)[:, None, None]
    a, b, c = mids[None], np.roll(pts, -1, 0)[None], np.roll(mids, -1, 0)[None]
    curve = ((1 - t) ** 2 * a + 2 * (1 - t) * t * b + t**2 * c).transpose(1, 0, 2).reshape(-1, 2)
    return _fill(shape, rng, np.arctan2(curve[:, 1], curve[:, 0]), np.hypot(*curve.T), False)


def _fill(
    shape: tuple[int, int],
    rng: np.random.Generator,
    ang: np.ndarray,
    r: np.ndarray,
    sort: bool = True,
) -> np.ndarray:
    """Fill the polygon of (angle, radius) points around a random centre."""
    h, w = shape
    cy, cx = rng.uniform(0.15, 0.85) * h, rng.uniform(0.15, 0.85) * w
    if sort:
        order = np.argsort(ang)
        ang, r = ang[order], r[order]
    pts = np.stack([cx + r * np.cos(ang), cy + r * np.sin(ang)], 1).round().astype(np.int32)
    mask = np.zeros(shape, np.uint8)
    cv2.fillPoly(mask, [pts], 1)
    return mask


def superpixel_mask(
    image: np.ndarray, rng: np.random.Generator, area: float, work: int = 128
) -> np.ndarray:
    """A union of SLIC superpixels (computed at ``work`` px for speed) grown from a seed."""
    h, w = image.shape[:2]
    f = work / max(h, w)
    small = cv2.resize(image, (max(8, round(w * f)), max(8, round(h * f))), cv2.INTER_AREA)
    labels = slic(small, n_segments=int(rng.integers(40, 160)), compactness=10, start_label=0)
    n = int(labels.max()) + 1
    ys, xs = np.indices(labels.shape)
    count = np.bincount(labels.ravel(), minlength=n).astype(float)
    cy = np.bincount(labels.ravel(), ys.ravel(), n) / np.maximum(count, 1)
    cx = np.bincount(labels.ravel(), xs.ravel(), n) / np.maximum(count, 1)
    seed = int(rng.integers(n))
    dist = np.hypot(cy - cy[seed], cx - cx[seed]) + rng.uniform(0, 2, n)
    order = np.argsort(dist)
    chosen = order[: np.searchsorted(np.cumsum(count[order]), area * labels.size) + 1]
    mask = np.isin(labels, chosen).astype(np.uint8)
    return cv2.resize(mask, (w, h), interpolation=cv2.INTER_NEAREST)


def random_mask(
    image: np.ndarray, rng: np.random.Generator, lo: float = 0.01, hi: float = 0.25
) -> np.ndarray:
    """An object-like {0, 1} mask (superpixels, Bezier blob or polygon) of area in [lo, hi]."""
    shape = image.shape[:2]
    for _ in range(8):
        area = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
        shape_kind = int(rng.integers(3))
        if shape_kind == 0:
            mask = superpixel_mask(image, rng, area)
        elif shape_kind == 1:
            mask = bezier_mask(shape, rng, area)
        else:
            mask = polygon_mask(shape, rng, area)
        frac = mask.mean()
        if 0.3 * lo <= frac <= min(0.6, 2 * hi):
            return mask
    return polygon_mask(shape, rng, lo)


def _affine(
    centre: tuple[float, float], shift: tuple[float, float], rng: np.random.Generator
) -> np.ndarray:
    """A 2x3 matrix moving ``centre`` (x, y) by ``shift``: with probability PLAIN_SHIFT_P a
    whole-pixel translation only, else also a rotation (+-30 deg) and scale (0.7-1.3)."""
    if rng.random() < PLAIN_SHIFT_P:
        return np.array([[1.0, 0.0, round(shift[0])], [0.0, 1.0, round(shift[1])]])
    m = cv2.getRotationMatrix2D(centre, rng.uniform(-30, 30), rng.uniform(0.7, 1.3))
    m[:, 2] += shift
    return m


def _random_shift(shape: tuple[int, int], rng: np.random.Generator) -> tuple[float, float]:
    """(dx, dy) up to a quarter of the width and height."""
    h, w = shape
    return float(rng.uniform(-0.25, 0.25) * w), float(rng.uniform(-0.25, 0.25) * h)


def _warp(img: np.ndarray, m: np.ndarray, nearest: bool = False) -> np.ndarray:
    """Warp with the affine ``m``; images reflect at the border, masks get zeros."""
    h, w = img.shape[:2]
    if nearest:
        return cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_NEAREST, borderValue=0)
    return cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def colour_match(src: np.ndarray, ref: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Shift ``src`` so its per-channel mean/std inside ``mask`` match ``ref``'s there."""
    sel = mask.astype(bool)
    s, r = src[sel].astype(np.float64), ref[sel].astype(np.float64)
    gain = (r.std(0) + 1e-3) / (s.std(0) + 1e-3)
    out = (src.astype(np.float64) - s.mean(0)) * np.clip(gain, 0.5, 2.0) + r.mean(0)
    return np.clip(out.round(), 0, 255).astype(np.uint8)


def _paste(host: np.ndarray, patch: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``patch`` where ``mask`` is 1, ``host`` elsewhere."""
    return np.where(mask[..., None].astype(bool), patch, host)


def splice(host: np.ndarray, donor: np.ndarray, rng: np.random.Generator) -> tuple:
    """Paste an object-like region of ``donor`` (warped, maybe colour-matched) into ``host``."""
    mask = random_mask(donor, rng)
    h, w = host.shape[:2]
    m = _affine((w / 2, h / 2), _random_shift((h, w), rng), rng)
    patch, mask = _warp(donor, m), _warp(mask, m, nearest=True)
    if not mask.any():
        mask = polygon_mask(host.shape[:2], rng, 0.05)
    if rng.random() < 0.7:
        patch = colour_match(patch, host, mask)
    return _paste(host, patch, mask), mask


def copy_move(host: np.ndarray, rng: np.random.Generator) -> tuple:
    """Copy a region of ``host`` elsewhere in it; the mask marks the pasted region."""
    h, w = host.shape[:2]
    src = random_mask(host, rng, 0.01, 0.12)
    ys, xs = np.nonzero(src)
    cy, cx = ys.mean(), xs.mean()
    ty, tx = rng.uniform(0.15, 0.85) * h, rng.uniform(0.15, 0.85) * w
    ext = max(np.ptp(ys), np.ptp(xs)) + 1
    if np.hypot(ty - cy, tx - cx) < 0.6 * ext:  # keep the copy away from its source
        ty, tx = (cy + h / 2) % h, (cx + w / 2) % w
    m = _affine((cx, cy), (tx - cx, ty - cy), rng)
    mask = _warp(src, m, nearest=True)
    if not mask.any():
        return splice(host, host[::-1, ::-1].copy(), rng)
    return _paste(host, _warp(host, m), mask), mask


def removal(host: np.ndarray, rng: np.random.Generator) -> tuple:
    """Inpaint a region of ``host`` away (OpenCV Telea or Navier-Stokes)."""
    mask = random_mask(host, rng, 0.005, 0.08)
    method = cv2.INPAINT_TELEA if rng.random() < 0.5 else cv2.INPAINT_NS
    out = cv2.inpaint(host, mask, float(rng.uniform(3, 8)), method)
    return _paste(host, out, mask), mask


def post_process(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random resampling, blur, noise and JPEG (quality 60-100), each with its own chance."""
    h, w = img.shape[:2]
    if rng.random() < 0.3:
        f = rng.uniform(0.5, 0.9)
        small = cv2.resize(img, (max(1, round(w * f)), max(1, round(h * f))), cv2.INTER_AREA)
        img = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    if rng.random() < 0.25:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.3, 1.5))
    if rng.random() < 0.25:
        noise = rng.normal(0, rng.uniform(1, 6), img.shape)
        img = np.clip(img + noise, 0, 255).round().astype(np.uint8)
    if rng.random() < 0.8:
        img = jpeg(img, int(rng.integers(60, 101)))
    return np.ascontiguousarray(img)


def jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    """``img`` (H, W, 3) uint8 saved as a JPEG of ``quality`` and decoded again."""
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=quality)
    return np.ascontiguousarray(np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB")))


def camera_jpeg(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A source crop's own compression history: with probability CAMERA_JPEG_P a JPEG of a
    random quality in CAMERA_QUALITY (grid aligned with the crop), else unchanged."""
    if rng.random() >= CAMERA_JPEG_P:
        return img
    return jpeg(img, int(rng.integers(*CAMERA_QUALITY)))


def generate(
    photos: Photos,
    seed: int,
    index: int,
    size: int | tuple[int, int] = 512,
    post: bool = True,
) -> Sample:
    """Sample ``index`` of the stream ``seed`` over ``photos`` (a list of (name, RGB))."""
    if not photos:
        raise ValueError("no source photos")
    photos = [(n, np.asarray(p)) for n, p in photos]
    rng = np.random.default_rng([seed, index])
    hw = _size(size)
    i = int(rng.integers(len(photos)))
    host = camera_jpeg(random_crop(photos[i][1], hw, rng), rng)
    kind = str(rng.choice(KINDS, p=KIND_P))
    donor = ""
    mask = np.zeros(hw, np.uint8)
    if kind == "splice":
        j = int(rng.integers(len(photos) - 1)) if len(photos) > 1 else 0
        j = j + (j >= i) if len(photos) > 1 else 0
        donor = photos[j][0]
        donor_crop = camera_jpeg(random_crop(photos[j][1], hw, rng), rng)
        img, mask = splice(host, donor_crop, rng)
    elif kind == "copymove":
        img, mask = copy_move(host, rng)
    elif kind == "removal":
        img, mask = removal(host, rng)
    else:
        img = host
    if post:
        img = post_process(img, rng)
    img = np.ascontiguousarray(img)
    return Sample(img, mask.astype(np.uint8), kind, photos[i][0], donor, host)


def make_sample(
    photos: Photos,
    seed: int,
    index: int,
    size: int | tuple[int, int] = 512,
    post: bool = True,
) -> tuple[np.ndarray, np.ndarray, str]:
    """(image uint8 (H, W, 3), mask uint8 {0, 1} (H, W), kind) of sample ``index``."""
    s = generate(photos, seed, index, size, post)
    return s.image, s.mask, s.kind


def write_synthetic_set(
    photos_dir: str | Path | None,
    n: int,
    out_dir: str | Path,
    seed: int = 0,
    size: int | tuple[int, int] = 512,
    val_fraction: float = 0.2,
    workers: int = 1,
) -> Path:
    """Write ``n`` samples as ``out_dir/Tp/<name>.png`` + ``Gt/<name>.png`` (0/255).

    The first ``n - round(n * val_fraction)`` samples are 'train' and use only the train
    photos, the rest 'val' with only the val photos. ``manifest.csv`` lists name, index,
    split, kind, source and donor photo; sample ``index`` is ``generate(split photos, seed,
    index)``. ``workers`` > 1 writes samples in that many processes (each loads the photos
    once); the files are the same byte for byte. Returns the manifest path.
    """
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers={workers!r} must be a positive integer")
    subsets = photo_subsets(photos_dir, val_fraction, seed)
    n_val = round(n * val_fraction)
    if n_val and not subsets["val"]:
        raise ValueError("a val split needs at least two source photos")
    out = Path(out_dir)
    (out / "Tp").mkdir(parents=True, exist_ok=True)
    (out / "Gt").mkdir(parents=True, exist_ok=True)
    tasks = [(index, "train" if index < n - n_val else "val") for index in range(n)]
    job = (seed, size, str(out))
    if workers == 1 or n < 2:
        rows = [_write_sample(subsets, job, task) for task in tasks]
    else:
        rows = _write_in_processes(photos_dir, val_fraction, job, tasks, workers)
    manifest = out / "manifest.csv"
    with manifest.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["name", "index", "split", "kind", "source", "donor"])
        writer.writerows(rows)
    return manifest


def photo_subsets(
    photos_dir: str | Path | None, val_fraction: float, seed: int
) -> dict[str, Photos]:
    """{'train': photos, 'val': photos} of a folder (or the bundled photos), split by photo."""
    photos = load_photos(photos_dir) if photos_dir is not None else default_photos()
    split = split_photos([p[0] for p in photos], val_fraction, seed)
    return {s: [p for p in photos if split[p[0]] == s] for s in ("train", "val")}


def _write_sample(subsets: dict[str, Photos], job: tuple, task: tuple[int, str]) -> list:
    """Generate and save one sample; its manifest row."""
    (seed, size, out), (index, part) = job, task
    s = generate(subsets[part], seed, index, size)
    name = f"{part}_{index:06d}"
    Image.fromarray(s.image).save(Path(out) / "Tp" / f"{name}.png")
    Image.fromarray(s.mask * 255).save(Path(out) / "Gt" / f"{name}.png")
    return [name, index, part, s.kind, s.source, s.donor]


_WORKER_SUBSETS: dict[str, Photos] = {}


def _init_worker(photos_dir: str | Path | None, val_fraction: float, seed: int) -> None:
    cv2.setNumThreads(1)
    _WORKER_SUBSETS.update(photo_subsets(photos_dir, val_fraction, seed))


def _worker_sample(job: tuple, task: tuple[int, str]) -> list:
    return _write_sample(_WORKER_SUBSETS, job, task)


def _write_in_processes(
    photos_dir: str | Path | None, val_fraction: float, job: tuple, tasks: list, workers: int
) -> list[list]:
    """The rows of ``tasks``, in order, written by ``workers`` spawned processes."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from functools import partial

    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        workers, mp_context=context, initializer=_init_worker,
        initargs=(photos_dir, val_fraction, job[0]),
    ) as pool:  # fmt: skip
        chunk = max(1, min(64, len(tasks) // (4 * workers)))
        return list(pool.map(partial(_worker_sample, job), tasks, chunksize=chunk))
