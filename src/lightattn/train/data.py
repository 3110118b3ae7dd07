"""Data sets for training and evaluation, as torch Datasets with their metadata.

`build_dataset(spec, img_size)` understands:

* ``digits``: scikit-learn's 8x8 handwritten digits (1,797 images, 10 classes), upsampled;
* ``pathfinder[:6|9|14|easy|intermediate|hard][:train=N,val=N,test=N]``: the Long Range Arena
  Pathfinder task from `lightattn.train.pathfinder` (default contour length 14, "hard"),
  generated with fixed seeds and cached on disk;
* a directory in the CIFAR-10 python layout (``data_batch_1`` .. ``data_batch_5``,
  ``test_batch``, ``batches.meta``), also when it is one level down as ``cifar-10-batches-py``;
* any other directory: an ImageFolder (one sub-folder per class; JPEG/PNG/BMP/TIFF read with
  Pillow and converted to RGB), with ``train/``, ``val/``, ``test/`` sub-folders used when
  present and a deterministic per-class split otherwise.

``cifar10:PATH`` and ``imagefolder:PATH`` force the kind. Every split is disjoint from the
others; `DataBundle.describe()` states the sources, the split rule, the counts, the resizing,
the normalisation and the augmentation. Problems with the data raise `DataError` (a
ValueError) with one line that names the path.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from .pathfinder import DIFFICULTY, PathfinderConfig, load_pathfinder

__all__ = [
    "IMAGE_SUFFIXES",
    "SPLITS",
    "Augment",
    "DataBundle",
    "DataError",
    "ImageFileDataset",
    "TensorImageDataset",
    "build_dataset",
    "read_image",
    "stratified_split",
]

SPLITS = ("train", "val", "test")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_IMG_SIZE = {"digits": 32, "pathfinder": 32, "cifar10": 32, "imagefolder": 224}
PATHFINDER_COUNTS = {"train": 20000, "val": 2000, "test": 2000}
_NAMES = {"easy": 6, "intermediate": 9, "hard": 14}


class DataError(ValueError):
    """A data set that cannot be used as asked: the message is one line naming the path."""


@dataclass(frozen=True)
class Augment:
    """Training augmentation on the resized image: a random crop of the image zero-padded by
    `pad` pixels on every side (0: no crop), and a horizontal flip with probability 1/2.
    Random numbers come from torch's global generator (seed it for repeatable runs)."""

    pad: int = 0
    flip: bool = False

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.pad > 0:
            h, w = x.shape[-2:]
            padded = F.pad(x, (self.pad,) * 4)
            top, left = (int(v) for v in torch.randint(0, 2 * self.pad + 1, (2,)))
            x = padded[..., top : top + h, left : left + w]
        if self.flip and bool(torch.rand(()) < 0.5):
            x = x.flip(-1)
        return x

    def describe(self) -> str:
        parts = [f"random crop (zero padding {self.pad})"] if self.pad > 0 else []
        parts += ["horizontal flip"] if self.flip else []
        return " + ".join(parts) or "none"


def _normalise(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    return (x - mean[:, None, None]) / std[:, None, None]


class TensorImageDataset(Dataset):
    """Images held in memory as uint8 (N, C, H, W); items are (float32 (C, S, S) tensor
    resized to `img_size` with `mode` and normalised with `mean`/`std`, int label).
    `ids` names every item's source (for checks that splits are disjoint)."""

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        img_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        ids: list[str],
        mode: str = "bilinear",
        augment: Augment | None = None,
    ) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError("images must be a uint8 tensor of shape (N, C, H, W)")
        self.images, self.labels = images, labels.to(torch.int64)
        self.img_size, self.mode, self.augment, self.ids = img_size, mode, augment, ids
        self.mean = torch.tensor(mean, dtype=torch.float32)
        self.std = torch.tensor(std, dtype=torch.float32)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        x = self.images[i].to(torch.float32) / 255.0
        if x.shape[-1] != self.img_size or x.shape[-2] != self.img_size:
            align = False if self.mode == "bilinear" else None
            x = F.interpolate(x[None], size=self.img_size, mode=self.mode, align_corners=align)[0]
        if self.augment is not None:
            x = self.augment(x)
        return _normalise(x, self.mean, self.std), int(self.labels[i])


def read_image(path: Path, img_size: int) -> torch.Tensor:
    """One image file as float32 (3, S, S) in [0, 1]: RGB (grayscale, palette and RGBA
    converted), resized bilinearly. An unreadable file raises DataError naming it."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            rgb = im.convert("RGB").resize((img_size, img_size), Image.Resampling.BILINEAR)
    except Exception as exc:  # Pillow raises many kinds on corrupt files
        raise DataError(f"unreadable image file {path}: {exc}") from exc
    arr = np.asarray(rgb, dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).to(torch.float32) / 255.0


class ImageFileDataset(Dataset):
    """Image files read with Pillow on access; items are (float32 (3, S, S) tensor resized
    bilinearly and normalised, int label). `ids` are the file paths."""

    def __init__(
        self,
        files: list[Path],
        labels: list[int],
        img_size: int,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        augment: Augment | None = None,
    ) -> None:
        self.files, self.img_size, self.augment = files, img_size, augment
        self.labels = torch.tensor(labels, dtype=torch.int64)
        self.ids = [str(f) for f in files]
        self.mean = torch.tensor(mean, dtype=torch.float32)
        self.std = torch.tensor(std, dtype=torch.float32)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        x = read_image(self.files[i], self.img_size)
        if self.augment is not None:
            x = self.augment(x)
        return _normalise(x, self.mean, self.std), int(self.labels[i])


@dataclass
class DataBundle:
    """The three splits of one data set and what a model needs to know about it."""

    name: str
    splits: dict[str, Dataset]
    num_classes: int
    in_chans: int
    class_names: list[str]
    img_size: int
    notes: list[str] = field(default_factory=list)

    def __getitem__(self, split: str) -> Dataset:
        if split not in self.splits:
            raise KeyError(f"no split {split!r}; splits: {', '.join(self.splits)}")
        return self.splits[split]

    @property
    def train(self) -> Dataset:
        return self.splits["train"]

    @property
    def val(self) -> Dataset:
        return self.splits["val"]

    @property
    def test(self) -> Dataset:
        return self.splits["test"]

    def counts(self) -> dict[str, int]:
        """Images per split."""
        return {k: len(v) for k, v in self.splits.items()}

    def describe(self) -> str:
        """A few lines: source, classes, image handling, split rule and counts."""
        counts = " / ".join(f"{k} {n}" for k, n in self.counts().items())
        names = ", ".join(self.class_names[:12]) + (", ..." if len(self.class_names) > 12 else "")
        lines = [
            f"data: {self.name}",
            f"classes: {self.num_classes} ({names}); input {self.in_chans}x"
            f"{self.img_size}x{self.img_size}",
            *self.notes,
            f"counts: {counts} (disjoint)",
        ]
        return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# Splitting.


def _split_counts(n: int, val_fraction: float, test_fraction: float) -> tuple[int, int]:
    """(val, test) sizes for `n` items: rounded fractions, at least one each when the
    fraction is positive and n >= 3, leaving at least one for training."""
    n_val, n_test = round(n * val_fraction), round(n * test_fraction)
    if n >= 3:
        n_val = max(n_val, 1 if val_fraction > 0 else 0)
        n_test = max(n_test, 1 if test_fraction > 0 else 0)
    while n_val + n_test >= n and (n_val or n_test):
        if n_val >= n_test:
            n_val -= 1
        else:
            n_test -= 1
    return n_val, n_test


def stratified_split(
    labels: Sequence[int], val_fraction: float, test_fraction: float, seed: int
) -> dict[str, np.ndarray]:
    """Sorted disjoint indices per split: each class is shuffled on its own with
    ``numpy.random.default_rng([seed, class])`` and cut into val, test and train."""
    labels = np.asarray(labels)
    out: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        idx = idx[np.random.default_rng([seed, int(c)]).permutation(len(idx))]
        n_val, n_test = _split_counts(len(idx), val_fraction, test_fraction)
        out["val"].append(idx[:n_val])
        out["test"].append(idx[n_val : n_val + n_test])
        out["train"].append(idx[n_val + n_test :])
    return {s: np.sort(np.concatenate(v)) if v else np.zeros(0, int) for s, v in out.items()}


def _check_fractions(val_fraction: float, test_fraction: float) -> None:
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError("val_fraction and test_fraction must be in [0, 1) and sum below 1")


def _pct(f: float) -> str:
    return f"{100 * f:g}%"


def _split_rule(source: str, val_fraction: float, test_fraction: float, seed: int) -> str:
    train = 1 - val_fraction - test_fraction
    return (
        f"split: {source} cut per class (seed {seed}): train {_pct(train)} / "
        f"val {_pct(val_fraction)} / test {_pct(test_fraction)}"
    )


def _stats(images: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 images (N, C, H, W) scaled to [0, 1], from each
    channel's histogram (exact, and no float copy of the data)."""
    values = torch.arange(256, dtype=torch.float64) / 255.0
    means, stds = [], []
    for c in range(images.shape[1]):
        counts = torch.bincount(images[:, c].reshape(-1), minlength=256).to(torch.float64)
        n = float(counts.sum())
        mean = float((counts * values).sum() / n)
        var = float((counts * (values - mean) ** 2).sum() / max(n - 1.0, 1.0))
        means.append(mean)
        stds.append(max(var**0.5, 1e-3))
    return means, stds


def _array_bundle(
    name: str,
    parts: dict[str, tuple[torch.Tensor, torch.Tensor, list[str]]],
    class_names: list[str],
    img_size: int,
    mode: str,
    augment: Augment | None,
    notes: list[str],
) -> DataBundle:
    """A bundle of in-memory splits normalised with the training split's statistics."""
    mean, std = _stats(parts["train"][0])
    splits = {
        s: TensorImageDataset(
            x, y, img_size, mean, std, ids, mode, augment if s == "train" else None
        )
        for s, (x, y, ids) in parts.items()
    }
    in_chans = int(parts["train"][0].shape[1])
    stats = ", ".join(f"{m:.3f}/{s:.3f}" for m, s in zip(mean, std, strict=True))
    notes = notes + [
        f"normalised with the train split's per-channel mean/std ({stats})",
        f"augment (train only): {augment.describe() if augment else 'none'}",
    ]
    return DataBundle(name, splits, len(class_names), in_chans, class_names, img_size, notes)


def _index_parts(
    images: torch.Tensor, labels: torch.Tensor, prefix: str, split: dict[str, np.ndarray]
) -> dict[str, tuple[torch.Tensor, torch.Tensor, list[str]]]:
    out = {}
    for s, idx in split.items():
        t = torch.from_numpy(idx.astype(np.int64))
        out[s] = (images[t], labels[t], [f"{prefix}{i}" for i in idx.tolist()])
    return out


# ----------------------------------------------------------------------------------------------
# Built-ins.


def _digits(
    img_size: int, augment: Augment | None, val_fraction: float, test_fraction: float, seed: int
) -> DataBundle:
    from sklearn.datasets import load_digits

    data = load_digits()
    images = torch.from_numpy(np.rint(data.images * (255.0 / 16.0)).astype(np.uint8))[:, None]
    labels = torch.from_numpy(data.target.astype(np.int64))
    split = stratified_split(data.target, val_fraction, test_fraction, seed)
    notes = [
        "source: scikit-learn load_digits (1,797 8x8 grayscale images, values 0..16 -> 0..255)",
        f"resized 8x8 -> {img_size}x{img_size} (bilinear)",
        _split_rule("the 1,797 images", val_fraction, test_fraction, seed),
    ]
    names = [str(i) for i in range(10)]
    parts = _index_parts(images, labels, "digits/", split)
    return _array_bundle("digits", parts, names, img_size, "bilinear", augment, notes)


def _pathfinder_options(spec: str) -> tuple[int, dict[str, int]]:
    """Contour length and split counts from ``pathfinder[:LEN|NAME][:k=v,...]``."""
    length, counts = 14, dict(PATHFINDER_COUNTS)
    for part in spec.split(":")[1:]:
        part = part.strip().lower()
        if not part:
            continue
        if "=" in part:
            for item in part.split(","):
                key, _, value = item.partition("=")
                key = key.strip()
                if key not in SPLITS or not value.strip().isdigit():
                    raise DataError(f"bad pathfinder option {item!r} (use train=N,val=N,test=N)")
                counts[key] = int(value)
        elif part in _NAMES:
            length = _NAMES[part]
        elif part.isdigit():
            length = int(part)
        else:
            raise DataError(
                f"bad pathfinder option {part!r} (contour length 6, 9, 14, easy, intermediate, "
                "hard, or train=N,val=N,test=N)"
            )
    if length < 1 or counts["train"] < 1:
        raise DataError("pathfinder needs a contour length >= 1 and at least one train image")
    return length, counts


def _pathfinder(
    spec: str,
    img_size: int,
    augment: Augment | None,
    seed: int,
    counts: Mapping[str, int] | None,
    cache_dir: str | Path | None,
) -> DataBundle:
    length, spec_counts = _pathfinder_options(spec)
    counts = {**spec_counts, **(counts or {})}
    cfg = PathfinderConfig(contour_length=length)
    parts, seeds = {}, {}
    for k, s in enumerate(SPLITS):
        seeds[s] = 3 * seed + k
        data = load_pathfinder(counts[s], cfg, seeds[s], cache_dir=cache_dir)
        ids = [f"pathfinder/{seeds[s]}/{i}" for i in range(len(data))]
        images = torch.from_numpy(data.images)[:, None]
        parts[s] = (images, torch.from_numpy(data.labels), ids)
    name = f"pathfinder (contour length {length}, {DIFFICULTY.get(length, 'custom')})"
    notes = [
        f"source: lightattn.train.pathfinder, 32x32 grayscale, {cfg.num_distractors} distractors,"
        f" paddle length {cfg.paddle_length}, margin {cfg.margin}; labels balanced",
        f"resized 32x32 -> {img_size}x{img_size} (nearest)",
        "split: generated apart, seeds " + " / ".join(f"{s} {v}" for s, v in seeds.items()),
    ]
    names = ["disconnected", "connected"]
    return _array_bundle(name, parts, names, img_size, "nearest", augment, notes)


# ----------------------------------------------------------------------------------------------
# CIFAR-10 python layout.


class _SafeUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only (a CIFAR batch), nothing that runs
    code."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),  # bytes in protocol-2 pickles written by Python 3
    }

    def find_class(self, module: str, name: str):  # noqa: ANN201 - pickle's signature
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            obj = _SafeUnpickler(f, encoding="bytes").load()
    except (OSError, pickle.UnpicklingError, EOFError, ValueError) as exc:
        raise DataError(f"unreadable CIFAR batch {path}: {exc}") from exc
    if not isinstance(obj, dict):
        raise DataError(f"unreadable CIFAR batch {path}: not a dict")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _cifar_root(path: Path) -> Path | None:
    """The folder holding the CIFAR-10 batches (`path` or its cifar-10-batches-py), or None."""
    for root in (path, path / "cifar-10-batches-py"):
        if (root / "test_batch").is_file() or (root / "data_batch_1").is_file():
            return root
    return None


def _cifar_batch(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    batch = _unpickle(path)
    try:
        data = np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray(batch["labels"], dtype=np.int64)
    except (KeyError, ValueError) as exc:
        raise DataError(f"unreadable CIFAR batch {path}: {exc!r}") from exc
    if len(labels) != len(data):
        raise DataError(f"unreadable CIFAR batch {path}: {len(data)} images, {len(labels)} labels")
    return torch.from_numpy(data.copy()), torch.from_numpy(labels)


def _cifar(
    root: Path,
    img_size: int,
    augment: Augment | None,
    val_fraction: float,
    seed: int,
) -> DataBundle:
    train_files = sorted(root.glob("data_batch_[0-9]*"), key=lambda p: p.name)
    if not train_files or not (root / "test_batch").is_file():
        raise DataError(f"CIFAR-10 folder {root} needs data_batch_1..5 and test_batch")
    batches = [_cifar_batch(p) for p in train_files]
    images = torch.cat([b[0] for b in batches])
    labels = torch.cat([b[1] for b in batches])
    sources = [
        f"{p.name}/{i}" for p, b in zip(train_files, batches, strict=True) for i in range(len(b[1]))
    ]
    test_x, test_y = _cifar_batch(root / "test_batch")
    names = [str(i) for i in range(int(max(labels.max(), test_y.max())) + 1)]
    if (root / "batches.meta").is_file():
        meta = _unpickle(root / "batches.meta")
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in meta["label_names"]]
    split = stratified_split(labels.numpy(), val_fraction, 0.0, seed)
    parts = {
        s: (
            images[torch.from_numpy(split[s])],
            labels[torch.from_numpy(split[s])],
            [sources[i] for i in split[s].tolist()],
        )
        for s in ("train", "val")
    }
    parts["test"] = (test_x, test_y, [f"test_batch/{i}" for i in range(len(test_y))])
    notes = [
        f"source: CIFAR-10 python batches in {root} ({', '.join(p.name for p in train_files)},"
        " test_batch)",
        f"resized 32x32 -> {img_size}x{img_size} (bilinear)",
        f"split: test = test_batch; val = {_pct(val_fraction)} of the training batches per "
        f"class (seed {seed}); train = the rest",
    ]
    return _array_bundle(f"cifar10 {root}", parts, names, img_size, "bilinear", augment, notes)


# ----------------------------------------------------------------------------------------------
# ImageFolder.


@dataclass
class _Folder:
    """Image files per class of one folder, and the files that are not images."""

    classes: dict[str, list[Path]]
    ignored: list[Path]


def _is_hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def _scan_classes(folder: Path) -> _Folder:
    """Class sub-folders of `folder` and their image files (recursively, sorted)."""
    classes, ignored = {}, []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        if not entry.is_dir():
            ignored.append(entry)
            continue
        files = []
        for f in sorted(entry.rglob("*")):
            if f.is_dir() or _is_hidden(f, folder):
                continue
            (files if f.suffix.lower() in IMAGE_SUFFIXES else ignored).append(f)
        classes[entry.name] = files
    return _Folder(classes, ignored)


def _check_classes(folder: Path, scan: _Folder) -> None:
    """One class at least two, and no class folder without images."""
    if not any(scan.classes.values()):
        raise DataError(
            f"data directory {folder} has no class sub-folders with images "
            f"(expected {folder}/<class>/<image>.png|jpg|bmp|tif)"
        )
    empty = [c for c, files in scan.classes.items() if not files]
    if empty:
        raise DataError(f"class folder {folder / empty[0]} has no images")
    if len(scan.classes) < 2:
        only = next(iter(scan.classes))
        raise DataError(f"data directory {folder} has only one class ({only}); need at least two")


def _check_readable(files: list[Path]) -> None:
    """Open every file's header with Pillow; the unreadable ones are named in one error."""
    from PIL import Image

    bad = []
    for f in files:
        try:
            with Image.open(f) as im:
                im.size  # noqa: B018 - the header is parsed on open; size proves it
        except Exception as exc:  # Pillow raises many kinds on corrupt files
            bad.append(f"{f} ({type(exc).__name__})")
    if bad:
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        raise DataError(f"unreadable image file(s): {'; '.join(bad[:3])}{more}")


def _folder_items(folder: Path, names: list[str]) -> tuple[list[Path], list[int], list[Path]]:
    """Files and labels of a split folder whose classes must be among `names`."""
    scan = _scan_classes(folder)
    unknown = [c for c in scan.classes if c not in names]
    if unknown:
        raise DataError(f"class folder {folder / unknown[0]} is not a class of the train split")
    files = [f for c in names for f in scan.classes.get(c, [])]
    labels = [i for i, c in enumerate(names) for _ in scan.classes.get(c, [])]
    return files, labels, scan.ignored


def _imagefolder(
    root: Path,
    img_size: int,
    augment: Augment | None,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    check: bool,
) -> DataBundle:
    if not root.is_dir():
        raise DataError(f"data directory {root} does not exist")
    base = root / "train" if (root / "train").is_dir() else root
    scan = _scan_classes(base)
    _check_classes(base, scan)
    names = list(scan.classes)
    files = [f for c in names for f in scan.classes[c]]
    labels = [i for i, c in enumerate(names) for _ in scan.classes[c]]
    ignored = list(scan.ignored)
    given = {s: root / s for s in ("val", "test") if base != root and (root / s).is_dir()}
    if base != root:  # anything beside train/ val/ test/ is not read: say so
        known = {"train", *given}
        ignored += [p for p in sorted(root.iterdir()) if p.name not in known | {"val", "test"}]
        ignored = [p for p in ignored if not p.name.startswith(".")]
    cut_val = 0.0 if "val" in given else val_fraction
    cut_test = 0.0 if "test" in given else test_fraction
    split = stratified_split(labels, cut_val, cut_test, seed)
    items = {s: ([files[i] for i in idx], [labels[i] for i in idx]) for s, idx in split.items()}
    for s, folder in given.items():
        f, y, ign = _folder_items(folder, names)
        items[s] = (f, y)
        ignored += ign
    if check:
        _check_readable([f for fs, _ in items.values() for f in fs])
    splits = {
        s: ImageFileDataset(f, y, img_size, augment=augment if s == "train" else None)
        for s, (f, y) in items.items()
    }
    notes = [
        f"source: image files read with Pillow, converted to RGB, resized to {img_size}x{img_size}"
        " (bilinear)",
        _folder_rule(root, base, given, cut_val, cut_test, seed),
        "normalised with ImageNet mean/std",
        f"augment (train only): {augment.describe() if augment else 'none'}",
    ]
    if ignored:
        shown = ", ".join(str(p.relative_to(root)) for p in ignored[:5])
        notes.append(f"ignored {len(ignored)} non-image file(s): {shown}")
    return DataBundle(f"imagefolder {root}", splits, len(names), 3, names, img_size, notes)


def _folder_rule(
    root: Path, base: Path, given: dict[str, Path], cut_val: float, cut_test: float, seed: int
) -> str:
    if base == root:
        return _split_rule(f"{root}", cut_val, cut_test, seed)
    parts = ["train/"] + [f"{s}/" for s in given]
    rule = f"split: {' '.join(parts)} folders of {root}"
    cut = [f"{s} {_pct(f)}" for s, f in (("val", cut_val), ("test", cut_test)) if f > 0]
    if cut:
        rule += f"; {' and '.join(cut)} of train/ cut per class (seed {seed})"
    return rule


# ----------------------------------------------------------------------------------------------
# Entry point.


def _default_augment(kind: str, img_size: int, augment: bool | None) -> Augment | None:
    """The kind's augmentation: crop + flip for photos, crop only for digits (a mirrored
    digit is another glyph), flip only and off by default for pathfinder (a crop could cut a
    marker off)."""
    if kind == "pathfinder":
        return Augment(0, True) if augment else None
    if augment is False:
        return None
    return Augment(pad=max(1, img_size // 8), flip=kind != "digits")


def _kind(spec: str) -> tuple[str, str]:
    """(kind, rest) of a spec: digits, pathfinder, cifar10, imagefolder or path."""
    head, _, rest = spec.partition(":")
    low = head.strip().lower()
    if low in ("digits", "pathfinder") and (low == "pathfinder" or not rest):
        return low, spec
    if low in ("cifar10", "imagefolder") and rest:
        return low, rest
    return "path", spec


def build_dataset(
    spec: str,
    img_size: int | None = None,
    *,
    augment: bool | None = None,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    cache_dir: str | Path | None = None,
    pathfinder_counts: Mapping[str, int] | None = None,
    check_images: bool = True,
) -> DataBundle:
    """The train/val/test splits of the data set named by `spec` (see the module docstring),
    resized to `img_size` (default: 32 for digits, pathfinder and CIFAR, 224 for folders).

    `augment` None: the kind's default for the train split (random crop with zero padding
    img_size // 8 and horizontal flip; no flip for digits; nothing for pathfinder), False:
    none, True: also flips for pathfinder. `seed` fixes every split that is cut rather than
    given (and the pathfinder seeds 3*seed, 3*seed+1, 3*seed+2). `val_fraction` and
    `test_fraction` apply where a split is cut (CIFAR: val only). `cache_dir`: where
    pathfinder sets are cached (default $LIGHTATTN_DATA/pathfinder or
    ~/.cache/lightattn/pathfinder). `check_images`: open every image file's header up front
    so an unreadable file fails here rather than mid-epoch."""
    _check_fractions(val_fraction, test_fraction)
    kind, rest = _kind(spec)
    if kind == "path":
        path = Path(rest).expanduser().resolve()
        kind = "cifar10" if _cifar_root(path) is not None else "imagefolder"
    else:
        path = Path(rest).expanduser().resolve()
    size = DEFAULT_IMG_SIZE[kind] if img_size is None else int(img_size)
    if size < 1:
        raise ValueError(f"img_size must be >= 1, got {img_size}")
    aug = _default_augment(kind, size, augment)
    if kind == "digits":
        return _digits(size, aug, val_fraction, test_fraction, seed)
    if kind == "pathfinder":
        return _pathfinder(rest, size, aug, seed, pathfinder_counts, cache_dir)
    if kind == "cifar10":
        root = _cifar_root(path)
        if root is None:
            raise DataError(f"no CIFAR-10 batches (data_batch_1, test_batch) in {path}")
        return _cifar(root, size, aug, val_fraction, seed)
    if not path.exists():
        raise DataError(
            f"data directory {path} does not exist (and {spec!r} is not a built-in: digits, "
            "pathfinder[:6|9|14])"
        )
    return _imagefolder(path, size, aug, val_fraction, test_fraction, seed, check_images)
