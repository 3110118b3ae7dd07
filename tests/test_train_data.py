"""The data layer of training: the Pathfinder generator (determinism, labels checked by an
independent flood-fill oracle on the path masks, balance, contour length, cache) and
build_dataset on ImageFolder, CIFAR-10 pickle, digits and pathfinder data."""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import subprocess
import sys
from collections import deque
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lightattn.train import DataError, build_dataset
from lightattn.train import pathfinder as pf
from lightattn.train.pathfinder import PathfinderConfig, generate_image, generate_pathfinder

LENGTHS = (6, 9, 14)

# ----------------------------------------------------------------------------------------------
# An oracle that knows nothing of the generator: 8-connected flood fill on a boolean mask.


def _flood(mask: np.ndarray, start: tuple[int, int]) -> np.ndarray:
    """Pixels of `mask` 8-connected to `start` (empty when `start` is off the mask)."""
    seen = np.zeros_like(mask, dtype=bool)
    if not mask[start]:
        return seen
    seen[start] = True
    todo = deque([start])
    h, w = mask.shape
    while todo:
        y, x = todo.popleft()
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                ny, nx = y + dy, x + dx
                if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    todo.append((ny, nx))
    return seen


def _components(mask: np.ndarray) -> int:
    """Number of 8-connected components of `mask`."""
    left, count = mask.copy(), 0
    while left.any():
        y, x = np.argwhere(left)[0]
        left &= ~_flood(left, (int(y), int(x)))
        count += 1
    return count


def _connected(paths: np.ndarray, markers: np.ndarray) -> bool:
    """Whether a flood fill over all path masks goes from marker 0 to marker 1."""
    a, b = (tuple(int(v) for v in m) for m in markers)
    return bool(_flood(paths > 0, a)[b])


@pytest.fixture(scope="module", params=LENGTHS)
def pathfinder_set(request) -> pf.PathfinderSet:
    return generate_pathfinder(200, PathfinderConfig(contour_length=request.param), seed=7)


# ----------------------------------------------------------------------------------------------
# Pathfinder generator.


def test_pathfinder_same_seed_same_bytes_other_seed_other_bytes():
    cfg = PathfinderConfig(contour_length=9)
    a, b = generate_pathfinder(24, cfg, seed=3), generate_pathfinder(24, cfg, seed=3)
    c = generate_pathfinder(24, cfg, seed=4)
    for name in ("images", "labels", "paths", "markers"):
        assert getattr(a, name).tobytes() == getattr(b, name).tobytes()
    assert a.images.tobytes() != c.images.tobytes()
    assert a.images.dtype == np.uint8 and a.images.shape == (24, 32, 32)


def test_pathfinder_any_image_regenerates_alone():
    cfg = PathfinderConfig(contour_length=6)
    whole = generate_pathfinder(20, cfg, seed=5)
    part = generate_pathfinder(6, cfg, seed=5, start=11)
    assert np.array_equal(part.images, whole.images[11:17])
    one = generate_image(cfg, 5, 13)
    assert np.array_equal(one.image, whole.images[13]) and one.label == whole.labels[13]


def test_pathfinder_golden_bytes():
    """Pins the bytes of a small set: a change here breaks 'same data on every machine' (and
    needs a GENERATOR_VERSION bump so stale caches are not read)."""
    golden = {
        6: "77d3b050bdd71d01a6ef73d3da73fd4ffe57a19b7c45f950263fe1b594638fbc",
        14: "6fc5f0a4e1417c546ad601ffee489a7e898d0460e554e0e224be3f8f2a168187",
    }
    for length, digest in golden.items():
        d = generate_pathfinder(8, PathfinderConfig(contour_length=length), seed=0)
        blob = d.images.tobytes() + d.labels.tobytes() + d.paths.tobytes() + d.markers.tobytes()
        assert hashlib.sha256(blob).hexdigest() == digest, length


def test_pathfinder_labels_match_the_flood_fill_oracle(pathfinder_set):
    d = pathfinder_set
    for i in range(len(d)):
        label, paths, markers = int(d.labels[i]), d.paths[i], d.markers[i]
        assert _connected(paths, markers) == (label == 1), i
        owners = [int(paths[tuple(m)]) for m in markers]
        assert min(owners) > 0 and (owners[0] == owners[1]) == (label == 1), i
        snake = paths == owners[0]
        a, b = (tuple(int(v) for v in m) for m in markers)
        assert bool(_flood(snake, a)[b]) == (label == 1), i
        assert (d.images[i][tuple(markers.T)] == 255).all()


def test_pathfinder_snakes_never_touch_and_ink_stays_on_them(pathfinder_set):
    d = pathfinder_set
    for i in range(0, len(d), 4):
        paths = d.paths[i]
        snakes = int(paths.max())
        assert 3 <= snakes <= 2 + d.config.num_distractors
        assert _components(paths > 0) == snakes, i  # one component per snake, none touching
        assert not ((d.images[i] > 0) & (paths == 0)).any()


def test_pathfinder_contour_length_is_respected():
    """In a label-1 image the other target carries no marker: it has exactly contour_length
    dashes of paddle_length + 1 pixels and margin-pixel gaps between them, so its path grows
    with the contour length."""
    sizes = {}
    for length in LENGTHS:
        cfg = PathfinderConfig(contour_length=length)
        d = generate_pathfinder(30, cfg, seed=11)
        for i in np.flatnonzero(d.labels == 1):
            owners = {int(d.paths[i][tuple(m)]) for m in d.markers[i]}
            (free,) = {1, 2} - owners
            ink = (d.images[i] > 0) & (d.paths[i] == free)
            assert ink.sum() == length * (cfg.paddle_length + 1), (length, i)
            assert _components(ink) == length, (length, i)
            solid = int((d.paths[i] == free).sum())
            assert solid == length * (cfg.paddle_length + 1) + (length - 1) * cfg.margin
            sizes[length] = solid
    assert sizes[6] < sizes[9] < sizes[14]


def test_pathfinder_labels_are_balanced():
    d = generate_pathfinder(101, PathfinderConfig(contour_length=6), seed=2)
    assert abs(int(d.labels.sum()) - 50) <= 1
    assert (d.labels[0:100:2] + d.labels[1:100:2] == 1).all()  # each pair holds a 0 and a 1
    assert d.labels.dtype == np.int64


def test_pathfinder_cache_round_trip(tmp_path, monkeypatch):
    cfg = PathfinderConfig(contour_length=6)
    first = pf.load_pathfinder(10, cfg, seed=1, cache_dir=tmp_path)
    files = list(tmp_path.iterdir())
    assert len(files) == 1 and files[0].suffix == ".npz"

    def no_generation(*args, **kwargs):
        raise AssertionError("should have been read from the cache")

    monkeypatch.setattr(pf, "generate_pathfinder", no_generation)
    again = pf.load_pathfinder(10, cfg, seed=1, cache_dir=tmp_path)
    assert np.array_equal(first.images, again.images) and np.array_equal(first.paths, again.paths)
    with pytest.raises(AssertionError):  # another count, seed or config is another file
        pf.load_pathfinder(10, cfg, seed=2, cache_dir=tmp_path)
    monkeypatch.undo()
    files[0].write_bytes(b"truncated")  # a damaged file is regenerated, not trusted
    fixed = pf.load_pathfinder(10, cfg, seed=1, cache_dir=tmp_path)
    assert np.array_equal(fixed.images, first.images)
    assert sorted(p.name for p in tmp_path.iterdir()) == [files[0].name]  # no temp files left


def test_pathfinder_cache_dir_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("LIGHTATTN_DATA", str(tmp_path))
    assert pf.default_cache_dir() == tmp_path / "pathfinder"
    pf.load_pathfinder(4, PathfinderConfig(contour_length=6), seed=0)
    assert len(list((tmp_path / "pathfinder").glob("*.npz"))) == 1
    monkeypatch.delenv("LIGHTATTN_DATA")
    assert pf.default_cache_dir() == Path.home() / ".cache" / "lightattn" / "pathfinder"


@pytest.mark.slow
def test_pathfinder_worker_processes_give_the_same_set():
    cfg = PathfinderConfig(contour_length=14)
    one = generate_pathfinder(2100, cfg, seed=9, workers=1)
    two = generate_pathfinder(2100, cfg, seed=9, workers=2)
    assert one.images.tobytes() == two.images.tobytes()


# ----------------------------------------------------------------------------------------------
# build_dataset: pathfinder and digits.


def _ids(bundle) -> dict[str, set[str]]:
    return {s: set(ds.ids) for s, ds in bundle.splits.items()}


def _assert_disjoint(bundle) -> None:
    ids = _ids(bundle)
    assert not ids["train"] & ids["val"] and not ids["train"] & ids["test"]
    assert not ids["val"] & ids["test"]
    for s, ds in bundle.splits.items():
        assert len(ids[s]) == len(ds) > 0, s


def test_build_pathfinder(tmp_path):
    counts = {"train": 40, "val": 10, "test": 10}
    b = build_dataset("pathfinder:9", pathfinder_counts=counts, cache_dir=tmp_path)
    assert (b.num_classes, b.in_chans, b.img_size) == (2, 1, 32)
    assert b.class_names == ["disconnected", "connected"] and b.counts() == counts
    _assert_disjoint(b)
    train = {b.train.images[i].numpy().tobytes() for i in range(len(b.train))}
    test = {b.test.images[i].numpy().tobytes() for i in range(len(b.test))}
    assert not train & test  # other seeds, other images
    x, y = b.train[0]
    assert x.shape == (1, 32, 32) and x.dtype == torch.float32 and y in (0, 1)
    assert "contour length 9" in b.describe() and "train 40 / val 10 / test 10" in b.describe()
    big = build_dataset("pathfinder:hard:train=12,val=4,test=4", img_size=64, cache_dir=tmp_path)
    assert big.counts() == {"train": 12, "val": 4, "test": 4} and big.train[0][0].shape[-1] == 64
    assert "contour length 14" in big.describe()
    assert b.train.augment is None  # no augmentation for pathfinder unless asked
    flips = build_dataset(
        "pathfinder:9", pathfinder_counts=counts, cache_dir=tmp_path, augment=True
    )
    assert flips.train.augment.flip and flips.train.augment.pad == 0 and flips.val.augment is None
    for bad in ("pathfinder:7x", "pathfinder:train=lots"):
        with pytest.raises(DataError):
            build_dataset(bad, cache_dir=tmp_path)


def test_pathfinder_default_split_sizes():
    from lightattn.train.data import PATHFINDER_COUNTS

    assert PATHFINDER_COUNTS["train"] >= 20000


def test_build_digits():
    b = build_dataset("digits", img_size=16)
    assert (b.num_classes, b.in_chans) == (10, 1)
    assert sum(b.counts().values()) == 1797
    _assert_disjoint(b)
    for split in ("val", "test"):
        assert set(b[split].labels.tolist()) == set(range(10))  # stratified
    x, y = b.val[3]
    assert x.shape == (1, 16, 16) and isinstance(y, int)
    batch = next(iter(torch.utils.data.DataLoader(b.train, batch_size=8)))
    assert batch[1].dtype == torch.int64 and batch[0].shape == (8, 1, 16, 16)
    again = build_dataset("digits", img_size=16)
    assert again.test.ids == b.test.ids  # deterministic split
    assert build_dataset("digits", img_size=16, seed=1).test.ids != b.test.ids


# ----------------------------------------------------------------------------------------------
# build_dataset: ImageFolder.


def _write(path: Path, mode: str, fmt: str, value: int = 100) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    size = (12, 10)
    if mode == "RGBA":
        img = Image.new("RGBA", size, (value, 50, 200, 128))
    elif mode == "L":
        img = Image.new("L", size, value)
    else:
        img = Image.new("RGB", size, (value, 20, 30))
    img.save(path, format=fmt)


def _folder(root: Path, classes=("cat", "dog", "fox"), per_class=10) -> list[Path]:
    kinds = [
        ("RGB", "JPEG", ".jpg"),
        ("RGBA", "PNG", ".png"),
        ("RGB", "BMP", ".bmp"),
        ("RGB", "TIFF", ".tiff"),
        ("L", "PNG", ".png"),
        ("L", "JPEG", ".jpeg"),
    ]
    out = []
    for c in classes:
        for i in range(per_class):
            mode, fmt, ext = kinds[i % len(kinds)]
            out.append(root / c / f"img{i}{ext}")
            _write(out[-1], mode, fmt, 10 * i)
    return out


def test_imagefolder_reads_every_format_and_splits(tmp_path):
    files = _folder(tmp_path)
    (tmp_path / "cat" / "notes.txt").write_text("not an image")
    b = build_dataset(str(tmp_path), img_size=16, augment=False)
    assert (b.num_classes, b.in_chans, b.class_names) == (3, 3, ["cat", "dog", "fox"])
    assert b.counts() == {"train": 24, "val": 3, "test": 3}
    _assert_disjoint(b)
    assert set().union(*_ids(b).values()) == {str(f) for f in files}  # none dropped
    for split in b.splits.values():
        for i in range(len(split)):
            x, y = split[i]
            assert x.shape == (3, 16, 16) and x.dtype == torch.float32 and torch.isfinite(x).all()
            assert y == b.class_names.index(Path(split.ids[i]).parent.name)
    text = b.describe()
    assert "train 80% / val 10% / test 10%" in text and "notes.txt" in text


def test_imagefolder_grayscale_and_rgba_become_rgb(tmp_path):
    from lightattn.train.data import read_image

    _write(tmp_path / "g.png", "L", "PNG", 200)
    _write(tmp_path / "a.png", "RGBA", "PNG", 90)
    gray = read_image(tmp_path / "g.png", 8)
    assert gray.shape == (3, 8, 8) and torch.allclose(gray, torch.full_like(gray, 200 / 255))
    rgba = read_image(tmp_path / "a.png", 8)
    assert rgba.shape == (3, 8, 8) and torch.allclose(
        rgba[:, 0, 0], torch.tensor([90, 50, 200]) / 255
    )


def test_imagefolder_uses_given_split_folders(tmp_path):
    _folder(tmp_path / "train", per_class=4)
    val = _folder(tmp_path / "val", per_class=2)
    test = _folder(tmp_path / "test", per_class=1)
    b = build_dataset(str(tmp_path), img_size=8)
    assert b.counts() == {"train": 12, "val": 6, "test": 3}
    assert set(b.val.ids) == {str(f) for f in val} and set(b.test.ids) == {str(f) for f in test}
    assert "train/ val/ test/ folders" in b.describe()
    x1, _ = b.train[0]
    torch.manual_seed(0)
    crops = {b.train[0][0].numpy().tobytes() for _ in range(8)}
    assert len(crops) > 1 and x1.shape == (3, 8, 8)  # train augments by default
    assert b.val[0][0].numpy().tobytes() == b.val[0][0].numpy().tobytes()


def test_imagefolder_with_train_and_val_only_cuts_test_from_train(tmp_path):
    _folder(tmp_path / "train", per_class=10)
    _folder(tmp_path / "val", per_class=2)
    b = build_dataset(str(tmp_path), img_size=8)
    assert b.counts() == {"train": 27, "val": 6, "test": 3}
    _assert_disjoint(b)
    assert all("/train/" in i for i in b.test.ids)
    assert "test 10% of train/" in b.describe()


def test_imagefolder_unreadable_file_is_named(tmp_path):
    _folder(tmp_path, per_class=3)
    broken = tmp_path / "dog" / "broken.png"
    broken.write_bytes(b"this is not a png")
    with pytest.raises(DataError, match="broken.png"):
        build_dataset(str(tmp_path), img_size=8)


def test_imagefolder_truncated_file_is_named_when_read(tmp_path):
    _folder(tmp_path, per_class=3)
    buf = io.BytesIO()
    Image.effect_noise((64, 64), 50).convert("RGB").save(buf, format="PNG")
    cut = tmp_path / "fox" / "cut.png"
    cut.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    b = build_dataset(str(tmp_path), img_size=8, val_fraction=0, test_fraction=0)
    i = b.train.ids.index(str(cut))
    with pytest.raises(DataError, match="cut.png"):
        b.train[i]


def test_imagefolder_bad_directories(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        build_dataset(str(tmp_path / "missing"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match=f"{empty}.*no class sub-folders"):
        build_dataset(str(empty))
    (empty / "cat").mkdir()
    with pytest.raises(DataError, match="no class sub-folders"):
        build_dataset(str(empty))
    _folder(tmp_path / "one", classes=("cat",), per_class=3)
    with pytest.raises(DataError, match=f"{tmp_path / 'one'} has only one class"):
        build_dataset(str(tmp_path / "one"))
    _folder(tmp_path / "hole", per_class=3)
    (tmp_path / "hole" / "emu").mkdir()
    with pytest.raises(DataError, match="emu has no images"):
        build_dataset(str(tmp_path / "hole"))
    assert issubclass(DataError, ValueError)


# ----------------------------------------------------------------------------------------------
# build_dataset: CIFAR-10 python pickle layout.


def _cifar_batch(path: Path, n: int, seed: int) -> tuple[np.ndarray, list[int]]:
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    labels = [int(v) for v in rng.integers(0, 10, n)]
    with open(path, "wb") as f:
        pickle.dump({b"batch_label": b"x", b"labels": labels, b"data": data}, f, protocol=2)
    return data, labels


def test_cifar_pickle_layout(tmp_path):
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    for k in range(1, 6):
        _cifar_batch(root / f"data_batch_{k}", 20, k)
    test_data, test_labels = _cifar_batch(root / "test_batch", 15, 0)
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer"]
    names += [b"dog", b"frog", b"horse", b"ship", b"truck"]
    with open(root / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": names, b"num_vis": 3072}, f, protocol=2)
    b = build_dataset(str(tmp_path), augment=False)  # found one level down
    assert (b.num_classes, b.in_chans, b.img_size) == (10, 3, 32)
    assert b.class_names[0] == "airplane" and b.class_names[-1] == "truck"
    assert len(b.train) + len(b.val) == 100 and len(b.test) == 15
    _assert_disjoint(b)
    x, y = b.test[4]
    raw = x * b.test.std[:, None, None] + b.test.mean[:, None, None]
    expect = torch.from_numpy(test_data[4].reshape(3, 32, 32).astype(np.float32)) / 255
    assert torch.allclose(raw, expect, atol=1e-5) and y == test_labels[4]
    assert "test_batch" in b.describe()
    assert build_dataset(f"cifar10:{root}", img_size=16).train[0][0].shape == (3, 16, 16)


def test_cifar_refuses_pickles_that_run_code(tmp_path):
    _cifar_batch(tmp_path / "data_batch_1", 4, 1)

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    with open(tmp_path / "test_batch", "wb") as f:
        pickle.dump({b"data": Evil(), b"labels": [0]}, f)
    with pytest.raises(DataError, match="test_batch"):
        build_dataset(str(tmp_path))


def test_train_package_does_not_import_the_cli():
    code = "import sys, lightattn.train; assert 'lightattn.cli' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
