"""Tamper metrics (hand-computed cases), real-data loader layouts and synthetic data."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lightattn.tamper.data import TamperDataset, find_pairs, load_mask
from lightattn.tamper.metrics import (
    GRID,
    best_f1,
    evaluate,
    f1_curve,
    image_accuracy,
    image_auc,
    pixel_auc,
    pixel_f1,
    pixel_iou,
)
from lightattn.tamper.synth import (
    default_photos,
    generate,
    make_sample,
    split_photos,
    write_synthetic_set,
)

CASIA = Path(__file__).resolve().parents[2] / "shared" / "data" / "tamper" / "casia1-samples"


# ---------------------------------------------------------------- metrics


def test_f1_iou_hand_case() -> None:
    prob = [[0.5, 0.6], [0.2, 0.9]]
    gt = [[1, 1], [0, 0]]
    # strict >: predicted = [0, 1, 0, 1] -> TP 1, FP 1, FN 1
    assert pixel_f1(prob, gt) == pytest.approx(0.5)
    assert pixel_iou(prob, gt) == pytest.approx(1 / 3)


def test_threshold_edge_is_strict() -> None:
    prob, gt = np.full((4, 4), 0.5), np.ones((4, 4))
    assert pixel_f1(prob, gt) == 0.0  # 0.5 is not > 0.5
    assert pixel_f1(prob, gt, threshold=0.49) == 1.0
    assert pixel_f1(torch.full((1, 4, 4), 0.5001), torch.ones(1, 4, 4)) == 1.0


def test_empty_and_all_tampered() -> None:
    z = np.zeros((3, 3))
    assert pixel_f1(z, z) == 0.0 and pixel_iou(z, z) == 0.0  # IMDL-BenCo: both empty -> 0
    assert pixel_f1(np.ones((3, 3)), z) == 0.0
    assert math.isnan(pixel_auc(z, z))
    ones = np.ones((3, 3))
    assert pixel_f1(ones * 0.9, ones) == 1.0 and pixel_iou(ones * 0.9, ones) == 1.0
    assert math.isnan(pixel_auc(ones * 0.9, ones))


def test_auc_and_best_f1_hand() -> None:
    assert pixel_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
    # top-3 of [0.9, 0.8, 0.3, 0.2] holds both positives: F1 = 4 / (3 + 2)
    assert best_f1([0.9, 0.8, 0.3, 0.2], [1, 0, 1, 0]) == pytest.approx(0.8)
    assert best_f1([0.5, 0.5, 0.1], [1, 0, 0]) == pytest.approx(2 / 3)  # ties move together
    assert image_auc([0.9, 0.2, 0.6], [1, 0, 0]) == 1.0
    assert image_accuracy([0.9, 0.5, 0.6], [1, 0, 0]) == pytest.approx(2 / 3)


def test_f1_curve_matches_pixel_f1() -> None:
    rng = np.random.default_rng(0)
    prob, gt = rng.random((16, 16)).round(2), rng.random((16, 16)) > 0.6
    curve = f1_curve(prob, gt)
    for j in (0, 25, 50, 63, 100):
        assert curve[j] == pytest.approx(pixel_f1(prob, gt, GRID[j]))
    assert curve.max() <= best_f1(prob, gt) + 1e-12


def test_evaluate_mixed_set() -> None:
    probs = [np.array([[0.9, 0.1], [0.6, 0.2]]), np.array([[0.3, 0.2], [0.1, 0.4]])]
    gts = [np.array([[1, 0], [0, 0]]), np.zeros((2, 2))]
    r = evaluate(probs, gts)
    assert (r["n_tampered"], r["n_authentic"]) == (1, 1)
    assert r["f1"] == pytest.approx(2 / 3)  # only the tampered image enters the pixel mean
    assert r["iou"] == pytest.approx(0.5) and r["auc"] == 1.0
    assert r["f1_best_per_image"] == 1.0 and r["f1_best_fixed"] == 1.0
    assert 0.6 <= r["best_threshold"] < 0.9
    assert r["image_auc"] == 1.0 and r["image_acc"] == 1.0  # scores = max prob: 0.9, 0.4
    r = evaluate(probs[:1], gts[:1], scores=[0.7])
    assert math.isnan(r["image_auc"]) and math.isnan(r["image_acc"])


# ---------------------------------------------------------------- real data


def _save(path: Path, a: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a).save(path)


def _rgb(h: int = 6, w: int = 8) -> np.ndarray:
    return np.random.default_rng(h * w).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _mask(h: int = 6, w: int = 8) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    m[1:3, 2:5] = 255
    return m


@pytest.mark.skipif(not CASIA.is_dir(), reason="shared CASIA v1 samples not present")
def test_casia_samples_load() -> None:
    ds = TamperDataset(CASIA)
    assert len(ds) == 36
    x, m, name = ds[0]
    assert x.shape[0] == 3 and m.shape == (1, *x.shape[1:]) and isinstance(name, str)
    assert float(x.min()) >= 0 and float(x.max()) <= 1 and set(m.unique().tolist()) == {0, 1}


def test_tp_gt_layout_and_resize(tmp_path: Path) -> None:
    _save(tmp_path / "Tp" / "a.jpg", _rgb())
    _save(tmp_path / "Gt" / "a.png", _mask())
    _save(tmp_path / "Au" / "b.png", _rgb())
    ds = TamperDataset(tmp_path)
    assert ds.names == ["a", "b"]
    x, m, _ = ds[0]
    assert x.shape == (3, 6, 8) and int(m.sum()) == 6
    assert int(ds[1][1].sum()) == 0
    assert TamperDataset(tmp_path, size=4)[0][0].shape == (3, 4, 4)
    assert len(TamperDataset(tmp_path, include_authentic=False)) == 1


def test_casia_columbia_coverage_naming(tmp_path: Path) -> None:
    _save(tmp_path / "casia" / "x.png", _rgb())
    _save(tmp_path / "casia" / "x_gt.png", _mask())
    assert [(p.image.name, p.mask.name) for p in find_pairs(tmp_path / "casia")] == [
        ("x.png", "x_gt.png")
    ]
    edge = np.zeros((6, 8, 3), np.uint8)
    edge[...] = (255, 0, 0)
    edge[2:4, 1:4] = (0, 255, 0)
    _save(tmp_path / "col" / "c1.tif", _rgb())
    _save(tmp_path / "col" / "edgemask" / "c1_edgemask.png", edge)
    (pair,) = find_pairs(tmp_path / "col")
    assert pair.mask.name == "c1_edgemask.png" and int(load_mask(pair.mask).sum()) == 6
    _save(tmp_path / "cov" / "image" / "1t.tif", _rgb())
    _save(tmp_path / "cov" / "image" / "1.tif", _rgb())
    _save(tmp_path / "cov" / "mask" / "1forged.tif", _mask())
    _save(tmp_path / "cov" / "mask" / "1copy.tif", _mask())
    pairs = {p.image.name: p.mask for p in find_pairs(tmp_path / "cov")}
    assert pairs["1.tif"] is None and pairs["1t.tif"].name == "1forged.tif"


def test_loader_errors_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no images"):
        TamperDataset(tmp_path)
    _save(tmp_path / "Tp" / "a.png", _rgb())
    (tmp_path / "Gt").mkdir()
    with pytest.raises(ValueError, match=r"a\.png: no mask"):
        TamperDataset(tmp_path)
    (tmp_path / "Gt" / "a.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match=r"Gt/a\.png: cannot read"):
        TamperDataset(tmp_path)[0]
    _save(tmp_path / "Gt" / "a.png", _mask(5, 5))
    with pytest.raises(ValueError, match="mask is 5x5"):
        TamperDataset(tmp_path)[0]


# ---------------------------------------------------------------- synthetic data


@pytest.fixture(scope="module")
def photos() -> list[tuple[str, np.ndarray]]:
    return default_photos()


def test_synth_deterministic(photos: list) -> None:
    for index in range(6):
        a, b = make_sample(photos, 3, index, size=96), make_sample(photos, 3, index, size=96)
        assert a[0].tobytes() == b[0].tobytes() and a[1].tobytes() == b[1].tobytes()
        assert a[2] == b[2] and a[0].shape == (96, 96, 3) and a[1].shape == (96, 96)
    assert make_sample(photos, 4, 0, 96)[0].tobytes() != make_sample(photos, 3, 0, 96)[0].tobytes()


def test_synth_masks_exact_before_post(photos: list) -> None:
    seen = set()
    for index in range(60):
        s = generate(photos, 1, index, size=(96, 128), post=False)
        inside = s.mask.astype(bool)
        assert s.host is not None and s.image.shape == (96, 128, 3)
        assert np.array_equal(s.image[~inside], s.host[~inside])
        if s.kind in ("splice", "copymove"):
            assert inside.any()
            differ = (s.image != s.host).any(-1)[inside].mean()
            assert differ > 0.9, (s.kind, index, differ)
        elif s.kind == "authentic":
            assert not inside.any() and np.array_equal(s.image, s.host)
        seen.add(s.kind)
    assert seen == {"splice", "copymove", "removal", "authentic"}


def test_synth_authentic_fraction(photos: list) -> None:
    kinds = [make_sample(photos, 0, i, size=48, post=False)[2] for i in range(100)]
    assert 0.12 <= kinds.count("authentic") / 100 <= 0.28


def test_split_by_photo_is_disjoint() -> None:
    names = [f"p{i}" for i in range(25)]
    split = split_photos(names, 0.2, seed=0)
    assert set(split) == set(names) and list(split.values()).count("val") == 5
    assert split == split_photos(list(reversed(names)), 0.2, seed=0)


def test_written_set_round_trips(tmp_path: Path) -> None:
    manifest = write_synthetic_set(None, 10, tmp_path, seed=0, size=64)
    rows = list(csv.DictReader(manifest.open()))
    assert len(rows) == 10 and {r["split"] for r in rows} == {"train", "val"}
    train = {r["source"] for r in rows if r["split"] == "train"}
    train |= {r["donor"] for r in rows if r["split"] == "train" and r["donor"]}
    val = {r["source"] for r in rows if r["split"] == "val"}
    val |= {r["donor"] for r in rows if r["split"] == "val" and r["donor"]}
    assert not train & val
    ds = TamperDataset(tmp_path)
    assert ds.names == [r["name"] for r in rows]
    for i, r in enumerate(rows):
        x, m, _ = ds[i]
        assert x.shape == (3, 64, 64)
        assert (int(m.sum()) == 0) == (r["kind"] == "authentic")


def test_plain_shift_pastes_an_exact_whole_pixel_copy(
    photos: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lightattn.tamper import synth

    monkeypatch.setattr(synth, "PLAIN_SHIFT_P", 1.0)
    host = synth.random_crop(photos[1][1], (48, 64), np.random.default_rng(0))
    for seed in range(4):
        image, mask = synth.copy_move(host, np.random.default_rng(seed))
        ys, xs = np.nonzero(mask)
        hits = [
            (dy, dx)
            for dy in range(-47, 48)
            for dx in range(-63, 64)
            if (ys - dy).min() >= 0 and (ys - dy).max() < 48 and (xs - dx).min() >= 0
            and (xs - dx).max() < 64 and np.array_equal(image[ys, xs], host[ys - dy, xs - dx])
        ]  # fmt: skip
        assert hits and (0, 0) not in hits


def test_camera_jpeg_gives_sources_their_own_block_grid() -> None:
    from lightattn.tamper.synth import jpeg

    rng = np.random.default_rng(0)
    ramp = np.linspace(40, 200, 64)[None, :, None] + rng.normal(0, 3, (64, 64, 3))
    crop = np.clip(ramp, 0, 255).round().astype(np.uint8)
    once = jpeg(crop, 40)
    assert once.shape == crop.shape and once.dtype == np.uint8
    assert not np.array_equal(once, crop) and np.array_equal(jpeg(crop, 40), once)
    step = np.abs(np.diff(once.astype(float), axis=1)).mean((0, 2))  # step[j]: col j -> j+1
    across, inside = step[7::8].mean(), np.delete(step, np.s_[7::8]).mean()
    assert across > 1.5 * inside, (across, inside)  # blocking: jumps at the 8x8 borders


def test_worker_processes_write_the_same_files(tmp_path: Path) -> None:
    one = write_synthetic_set(None, 12, tmp_path / "one", seed=5, size=48, workers=1).parent
    two = write_synthetic_set(None, 12, tmp_path / "two", seed=5, size=48, workers=2).parent
    names = sorted(p.relative_to(one) for p in one.rglob("*") if p.is_file())
    assert len(names) == 25 and names == sorted(p.relative_to(two) for p in two.rglob("*")
                                                if p.is_file())  # fmt: skip
    assert all((one / n).read_bytes() == (two / n).read_bytes() for n in names)
    with pytest.raises(ValueError, match="workers=0"):
        write_synthetic_set(None, 2, tmp_path / "bad", workers=0)
