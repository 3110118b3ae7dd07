"""`lightattn.tamper.robustness` and `lightattn tamper robustness`: perturbations, curves,
files, exit codes."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lightattn.cli import main
from lightattn.tamper import create_tamper_model
from lightattn.tamper.checkpoint import save_tamper_model
from lightattn.tamper.robustness import (
    PERTURBATIONS,
    gaussian_blur,
    gaussian_noise,
    jpeg,
    perturb,
    rescale,
    robustness,
    write_robustness,
)

KWARGS = {"width": 0.25, "inner": "linear"}


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)


def smooth_image(h: int = 48, w: int = 64) -> np.ndarray:
    """A smooth colour gradient (JPEG reproduces it almost exactly at quality 100)."""
    y, x = np.mgrid[0:h, 0:w]
    rgb = np.stack([x * 255 / w, y * 255 / h, (x + y) * 127 / (h + w) + 64], -1)
    return np.rint(rgb).astype(np.uint8)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """Three tampered images (Tp/ + Gt/), two sizes."""
    rng = np.random.default_rng(0)
    for sub in ("Tp", "Gt"):
        (tmp_path / "data" / sub).mkdir(parents=True)
    for i, (h, w) in enumerate([(40, 56), (56, 40), (40, 56)]):
        img = rng.integers(0, 255, (h, w, 3), np.uint8)
        mask = np.zeros((h, w), np.uint8)
        mask[5 + i : 20 + i, 8:30] = 255
        Image.fromarray(img).save(tmp_path / "data" / "Tp" / f"im{i}.png")
        Image.fromarray(mask).save(tmp_path / "data" / "Gt" / f"im{i}.png")
    return tmp_path / "data"


@pytest.fixture
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_tamper_model(**KWARGS).eval()


@pytest.fixture
def checkpoint(tmp_path: Path, model: torch.nn.Module) -> Path:
    path = tmp_path / "tiny.safetensors"
    save_tamper_model(model, path, KWARGS)
    return path


def test_jpeg_quality_100_is_near_identity_and_lower_quality_loses_more():
    rgb = smooth_image()
    q100, q50 = jpeg(rgb, 100), jpeg(rgb, 50)
    assert q100.dtype == np.uint8 and q100.shape == rgb.shape
    err100 = np.abs(q100.astype(int) - rgb).mean()
    err50 = np.abs(q50.astype(int) - rgb).mean()
    assert err100 < 1.5 and err50 > err100


def test_zero_blur_and_zero_noise_are_identity():
    rgb = np.random.default_rng(1).integers(0, 255, (30, 20, 3), np.uint8)
    assert np.array_equal(gaussian_blur(rgb, 0), rgb)
    assert np.array_equal(gaussian_noise(rgb, 0, np.random.default_rng(0)), rgb)
    mask = (rgb[..., 0] > 128).astype(np.uint8)
    img, small = rescale(rgb, mask, 1.0)
    assert np.array_equal(img, rgb) and np.array_equal(small, mask)


def test_blur_smooths_and_noise_has_its_sigma():
    rgb = np.random.default_rng(2).integers(0, 255, (64, 64, 3), np.uint8)
    blurred = gaussian_blur(rgb, 2.0)
    assert blurred.dtype == np.uint8 and blurred.shape == rgb.shape
    assert blurred.std() < 0.5 * rgb.std()
    gray = np.full((128, 128, 3), 128, np.uint8)
    noisy = gaussian_noise(gray, 10.0, np.random.default_rng(3))
    assert noisy.dtype == np.uint8
    assert abs((noisy.astype(float) - 128).std() - 10.0) < 0.5
    again = gaussian_noise(gray, 10.0, np.random.default_rng(3))
    assert np.array_equal(noisy, again)


def test_rescale_sizes_and_binary_mask():
    rgb = smooth_image(41, 63)
    mask = np.zeros((41, 63), np.uint8)
    mask[10:30, 5:40] = 1
    img, small = rescale(rgb, mask, 0.5)
    assert img.shape == (20, 32, 3) and img.dtype == np.uint8  # round(20.5)=20, round(31.5)=32
    assert small.shape == (20, 32) and set(np.unique(small)) == {0, 1}
    assert abs(small.mean() - mask.mean()) < 0.05


@pytest.mark.parametrize(
    "call",
    [
        lambda r: jpeg(r, 0),
        lambda r: jpeg(r, 101),
        lambda r: gaussian_blur(r, -1),
        lambda r: gaussian_noise(r, -1, np.random.default_rng(0)),
        lambda r: rescale(r, r[..., 0], 0),
        lambda r: rescale(r, r[..., 0], 1.5),
        lambda r: perturb("sepia", r, r[..., 0], 1, np.random.default_rng(0)),
        lambda r: jpeg(r.astype(np.float32), 90),
    ],
)
def test_bad_arguments_raise_value_error(call):
    with pytest.raises(ValueError):
        call(smooth_image())


def test_curves_start_at_the_clean_metrics(data_dir, model):
    result = robustness(model, data_dir, ["blur", "noise", "resize"])
    assert result["n_images"] == 3 and list(result["curves"]) == ["blur", "noise", "resize"]
    clean = result["clean"]
    for name, curve in result["curves"].items():
        assert [r["level"] for r in curve] == list(PERTURBATIONS[name].levels)
        for key in ("f1", "iou", "auc"):
            assert curve[0][key] == pytest.approx(clean[key], abs=1e-9), (name, key)
            assert all(0.0 <= r[key] <= 1.0 for r in curve)
    assert result["curves"]["noise"][-1]["auc"] != clean["auc"]  # the images did change


def test_write_robustness_files(tmp_path, data_dir, model):
    result = robustness(model, data_dir, ["jpeg", "blur"])
    paths = write_robustness(result, tmp_path / "plots", "tiny")
    assert [p.name for p in paths] == ["robustness.json", "robustness.csv", "robustness.png"]
    assert json.loads(paths[0].read_text())["curves"]["jpeg"][0]["level"] == 100
    with open(paths[1]) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1 + len(PERTURBATIONS["jpeg"].levels) + len(PERTURBATIONS["blur"].levels)
    assert rows[0]["perturbation"] == "none"
    with Image.open(paths[2]) as im:
        assert im.format == "PNG" and im.size[0] > 300


def test_cli_writes_its_files(tmp_path, data_dir, checkpoint, capsys):
    out = tmp_path / "out"
    code = main(["tamper", "robustness", "--data", str(data_dir), "--out", str(out),
                 "--checkpoint", str(checkpoint), "--only", "resize"])  # fmt: skip
    assert code == 0
    for name in ("robustness.json", "robustness.csv", "robustness.png"):
        assert (out / name).is_file(), name
    result = json.loads((out / "robustness.json").read_text())
    assert list(result["curves"]) == ["resize"]
    assert "resize" in capsys.readouterr().out


@pytest.mark.parametrize(
    "extra",
    [
        ["--data", "/nonexistent/folder"],
        ["--only", "sepia"],
    ],
)
def test_cli_bad_input_exit_2(tmp_path, data_dir, checkpoint, capsys, extra):
    argv = ["tamper", "robustness", "--data", str(data_dir), "--out", str(tmp_path / "o"),
            "--checkpoint", str(checkpoint), *extra]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "error" in err[0]
    assert not (tmp_path / "o" / "robustness.json").exists()
