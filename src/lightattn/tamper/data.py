"""Real tampered-image data sets: pairing images with ground-truth masks, and a torch Dataset.

Layouts understood by :func:`find_pairs` (folder names are matched case-insensitively):

* ``Tp/`` + ``Gt/`` with the same stems and masks 0/255 (any extension), as in the CASIA v1
  samples and the sets written by :mod:`lightattn.tamper.synth`;
* CASIA naming: ``<stem>_gt.png`` beside the image or in a ``Gt``/``mask`` folder;
* Columbia naming: ``<stem>_mask.*`` or ``<stem>_edgemask.*`` beside the image or in an
  ``edgemask``/``mask`` folder;
* Coverage naming: ``image/<n>t.tif`` with ``mask/<n>forged.tif``; ``image/<n>.tif`` (the
  original of ``<n>t``) is an authentic image;
* an ``Au/`` (or ``authentic/``) folder holds authentic images with an empty mask.

Masks are binarized as ``value > 127`` (or ``> 0`` for masks stored as 0/1). A colour mask
(Columbia's edgemask) is tampered where it is green-dominant (G > 127 and R <= 127), the
colour Columbia uses for the region from the second camera; if it has no such pixel, any
channel above 127 counts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp", ".gif"}
IMAGE_DIRS = ("tp", "tampered", "image", "images", "img", "imgs", "fake")
MASK_DIRS = ("gt", "mask", "masks", "groundtruth", "ground_truth", "edgemask", "gts")
AUTH_DIRS = ("au", "authentic", "real")
MASK_SUFFIXES = ("_gt", "_mask", "_edgemask", "-gt", "_gt_mask")
COVERAGE_TAMPERED = re.compile(r"^(\d+)t$")
COVERAGE_MASK = re.compile(r"^\d+(forged|copy|paste)$")


@dataclass(frozen=True)
class Pair:
    """One image and its mask file; ``mask`` is None for an authentic image (empty mask)."""

    image: Path
    mask: Path | None


def _images(folder: Path) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS)


def _subdir(root: Path, names: tuple[str, ...]) -> Path | None:
    """The first sub-folder of ``root`` whose lower-cased name is in ``names``."""
    subs = {p.name.lower(): p for p in sorted(root.iterdir()) if p.is_dir()}
    return next((subs[n] for n in names if n in subs), None)


def _is_mask_name(stem: str) -> bool:
    """True for file stems that name a mask rather than an image."""
    low = stem.lower()
    return low.endswith(MASK_SUFFIXES) or "_mask" in low or bool(COVERAGE_MASK.match(low))


def _mask_candidates(stem: str) -> list[str]:
    """Lower-cased mask stems to try for an image stem, most specific first."""
    low = stem.lower()
    out = [low] + [low + s for s in MASK_SUFFIXES]
    m = COVERAGE_TAMPERED.match(low)
    if m:
        out.append(m.group(1) + "forged")
    return out


def _mask_index(folders: list[Path]) -> dict[str, Path]:
    """Lower-cased stem -> mask file over ``folders`` (earlier folders win)."""
    index: dict[str, Path] = {}
    for folder in reversed(folders):
        for p in _images(folder):
            index[p.stem.lower()] = p
    return index


def find_pairs(root: str | Path, include_authentic: bool = True) -> list[Pair]:
    """Pair every image under ``root`` with its mask (see the module doc for layouts).

    Raises ValueError naming the path for a missing folder, an empty folder or an image
    without a mask.
    """
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"{root}: not a folder")
    img_dir = _subdir(root, IMAGE_DIRS) or root
    mask_dir = _subdir(root, MASK_DIRS) or _subdir(img_dir, MASK_DIRS)
    mask_folders = [d for d in (mask_dir, img_dir) if d is not None]
    index = _mask_index(mask_folders)
    separate = mask_dir is not None and mask_dir != img_dir
    stems = {p.stem.lower() for p in _images(img_dir)}
    pairs: list[Pair] = []
    for img in _images(img_dir):
        low = img.stem.lower()
        if _is_mask_name(low):
            continue
        if re.fullmatch(r"\d+", low) and f"{low}t" in stems:  # Coverage original
            if include_authentic:
                pairs.append(Pair(img, None))
            continue
        cands = _mask_candidates(img.stem)[(0 if separate else 1) :]
        mask = next((index[c] for c in cands if c in index and index[c] != img), None)
        if mask is None:
            where = ", ".join(str(d) for d in mask_folders)
            raise ValueError(f"{img}: no mask found (tried {cands} in {where})")
        pairs.append(Pair(img, mask))
    auth_dir = _subdir(root, AUTH_DIRS)
    if include_authentic and auth_dir is not None:
        pairs += [Pair(p, None) for p in _images(auth_dir)]
    if not pairs:
        raise ValueError(f"{root}: no images found")
    return pairs


def _open(path: Path) -> Image.Image:
    """Open and fully decode an image, turning any failure into a ValueError naming it."""
    try:
        with Image.open(path) as im:
            im.load()
            return im.copy()
    except Exception as exc:  # PIL raises many types for bad files
        raise ValueError(f"{path}: cannot read image ({exc})") from exc


def load_image(path: str | Path) -> np.ndarray:
    """An image file as uint8 RGB (H, W, 3); grayscale, RGBA, palette and 16-bit converted."""
    im = _open(Path(path))
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(im, dtype=np.float64)
        a = a / max(float(a.max()), 1.0) * 255.0 if a.max() > 255 else a
        im = Image.fromarray(a.astype(np.uint8))
    return np.asarray(im.convert("RGB"), dtype=np.uint8)


def load_mask(path: str | Path) -> np.ndarray:
    """A mask file as uint8 {0, 1} (H, W); see the module doc for the binarization rule."""
    im = _open(Path(path))
    a = np.asarray(im.convert("RGB") if im.mode in ("P", "RGBA", "CMYK") else im)
    if a.ndim == 3:
        r, g = a[..., 0].astype(int), a[..., 1].astype(int)
        green = (g > 127) & (r <= 127)
        if a[..., :3].std(axis=-1).max() > 0 and green.any():
            return green.astype(np.uint8)
        a = a[..., :3].max(axis=-1)
    return (a > (0 if a.max() <= 1 else 127)).astype(np.uint8)


def _resize(a: np.ndarray, size: tuple[int, int], nearest: bool) -> np.ndarray:
    """Resize an (H, W[, C]) uint8 array to size = (H, W)."""
    resample = Image.NEAREST if nearest else Image.BILINEAR
    return np.asarray(Image.fromarray(a).resize((size[1], size[0]), resample))


class TamperDataset(Dataset):
    """(image float (3, H, W) in [0, 1], mask float (1, H, W) in {0, 1}, name) per pair.

    Images keep their native size unless ``size`` (an int or (H, W)) is given; a mask whose
    size differs from its image's raises ValueError naming both files.
    """

    def __init__(
        self,
        root: str | Path,
        size: int | tuple[int, int] | None = None,
        include_authentic: bool = True,
    ) -> None:
        self.root = Path(root)
        self.pairs = find_pairs(self.root, include_authentic)
        self.size = (size, size) if isinstance(size, int) else size

    def __len__(self) -> int:
        return len(self.pairs)

    @property
    def names(self) -> list[str]:
        """The image stems, in item order."""
        return [p.image.stem for p in self.pairs]

    def arrays(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Item ``i`` as (uint8 RGB (H, W, 3), uint8 {0, 1} mask (H, W))."""
        pair = self.pairs[i]
        img = load_image(pair.image)
        if pair.mask is None:
            mask = np.zeros(img.shape[:2], np.uint8)
        else:
            mask = load_mask(pair.mask)
            if mask.shape != img.shape[:2]:
                raise ValueError(
                    f"{pair.mask}: mask is {mask.shape[1]}x{mask.shape[0]} but image "
                    f"{pair.image} is {img.shape[1]}x{img.shape[0]}"
                )
        if self.size is not None:
            img, mask = _resize(img, self.size, False), _resize(mask, self.size, True)
        return img, mask

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, str]:
        img, mask = self.arrays(i)
        x = torch.from_numpy(np.array(img)).permute(2, 0, 1).float() / 255.0
        m = torch.from_numpy(np.array(mask)).float()[None]
        return x, m, self.pairs[i].image.stem
