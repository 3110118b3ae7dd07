"""`lightattn tamper predict|eval|synth|train`: outputs, bad files, refusals, exit codes."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lightattn.cli import main
from lightattn.tamper import create_tamper_model
from lightattn.tamper.checkpoint import save_tamper_model
from lightattn.tamper.predict import default_checkpoint, predict_array

CASIA = Path(__file__).resolve().parents[1].parent / "shared/data/tamper/casia1-samples"


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    """A tiny untrained tamper checkpoint."""
    kwargs = {"width": 0.25, "inner": "linear"}
    torch.manual_seed(0)
    path = tmp_path / "tiny.safetensors"
    save_tamper_model(create_tamper_model(**kwargs).eval(), path, kwargs)
    return path


def write_inputs(folder: Path) -> dict[str, tuple[int, int] | None]:
    """Good images of several kinds (name -> (W, H)) and bad files (name -> None)."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (53, 37, 3), np.uint8)).save(folder / "rgb.png")
    Image.fromarray(rng.integers(0, 255, (40, 30), np.uint8)).save(folder / "gray.jpg")
    Image.fromarray(rng.integers(0, 255, (21, 66, 4), np.uint8), "RGBA").save(folder / "rgba.png")
    deep = rng.integers(0, 65535, (33, 45)).astype(np.uint16)
    Image.fromarray(deep).save(folder / "deep16.png")
    full = folder / "full.jpg"
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), np.uint8)).save(full)
    (folder / "truncated.jpg").write_bytes(full.read_bytes()[:300])
    full.unlink()
    (folder / "notes.png").write_text("this is not an image\n")
    return {
        "rgb.png": (37, 53),
        "gray.jpg": (30, 40),
        "rgba.png": (66, 21),
        "deep16.png": (45, 33),
        "truncated.jpg": None,
        "notes.png": None,
    }


def test_predict_mixed_files(tmp_path, checkpoint, capsys):
    files = write_inputs(tmp_path / "in")
    out = tmp_path / "out"
    args = [str(tmp_path / "in" / n) for n in files]
    code = main(["tamper", "predict", *args, "--out", str(out), "--checkpoint", str(checkpoint)])
    err = capsys.readouterr().err
    assert code == 1  # some files could not be read
    for name, size in files.items():
        stem = Path(name).stem
        if size is None:
            lines = [line for line in err.splitlines() if name in line]
            assert len(lines) == 1, err
            assert not (out / f"{stem}_mask.png").exists()
            continue
        mask = Image.open(out / f"{stem}_mask.png")
        assert mask.mode == "L" and mask.size == size
        overlay = Image.open(out / f"{stem}_overlay.png")
        assert overlay.mode == "RGB" and overlay.size == size
    with open(out / "scores.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["name"] for r in rows] == ["rgb", "gray", "rgba", "deep16"]
    for r in rows:
        assert 0 <= float(r["score"]) <= 1 and 0 <= float(r["max_prob"]) <= 1
        assert 0 <= float(r["tampered_fraction"]) <= 1


def test_predict_all_good_exits_0_and_mask_is_probability(tmp_path, checkpoint):
    rgb = np.random.default_rng(1).integers(0, 255, (29, 41, 3), np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    out = tmp_path / "o"
    code = main(["tamper", "predict", str(tmp_path / "a.png"), "--out", str(out),
                 "--checkpoint", str(checkpoint)])  # fmt: skip
    assert code == 0
    from lightattn.tamper.checkpoint import load_tamper_model

    model, _ = load_tamper_model(checkpoint)
    prob, _ = predict_array(model, rgb)
    mask = np.asarray(Image.open(out / "a_mask.png")).astype(int)
    assert np.abs(mask - np.rint(prob * 255)).max() <= 1


def test_tiles_cover_large_images(tmp_path):
    model = create_tamper_model(width=0.25, inner="linear").eval()
    rgb = np.random.default_rng(2).integers(0, 255, (150, 97, 3), np.uint8)
    tiled, score = predict_array(model, rgb, max_side=64, batch_size=2)
    whole, _ = predict_array(model, rgb, max_side=4096)
    assert tiled.shape == whole.shape == (150, 97)
    assert np.isfinite(tiled).all() and 0 <= tiled.min() <= tiled.max() <= 1
    assert 0 <= score <= 1


def test_predict_refuses_to_overwrite_an_input(tmp_path, checkpoint, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    Image.new("RGB", (20, 20)).save(folder / "x.png")
    victim = folder / "x_mask.png"
    Image.new("RGB", (20, 20), "white").save(victim)
    before = victim.read_bytes()
    code = main(["tamper", "predict", str(folder / "x.png"), str(victim), "--out", str(folder),
                 "--checkpoint", str(checkpoint)])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "refusing to overwrite" in err[0]
    assert victim.read_bytes() == before
    assert not (folder / "scores.csv").exists()


def test_same_stems_get_distinct_outputs(tmp_path, checkpoint):
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        Image.new("RGB", (16, 12)).save(tmp_path / sub / "img.png")
    out = tmp_path / "o"
    code = main(["tamper", "predict", str(tmp_path / "a/img.png"), str(tmp_path / "b/img.png"),
                 "--out", str(out), "--checkpoint", str(checkpoint)])  # fmt: skip
    assert code == 0
    assert (out / "img_mask.png").exists() and (out / "img_2_mask.png").exists()


@pytest.mark.skipif(default_checkpoint() is not None, reason="a default checkpoint is shipped")
@pytest.mark.parametrize("command", ["predict", "eval"])
def test_no_default_checkpoint_is_one_line_exit_2(tmp_path, capsys, command):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    args = ["a.png", "--out", str(tmp_path / "o")] if command == "predict" else ["--data", "x"]
    code = main(["tamper", command, *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "no default checkpoint is shipped yet" in err[0] and "--checkpoint" in err[0]


def test_bad_checkpoint_is_one_line_exit_2(tmp_path, capsys):
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    code = main(["tamper", "predict", "a.png", "--out", str(tmp_path),
                 "--checkpoint", str(tmp_path / "junk.safetensors")])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "junk.safetensors" in err[0]


@pytest.mark.parametrize("argv", [["tamper"], ["tamper", "frobnicate"], ["tamper", "predict"]])
def test_usage_errors_exit_2(argv, capsys):
    assert main(argv) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_train_help_lists_its_options(capsys):
    assert main(["tamper", "train", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--resume" in out and "--img-size" in out and "--detail-weight" in out
    assert "--noise" in out and "--init" in out and "--init-skip" in out


def test_synth_writes_tp_and_gt(tmp_path):
    out = tmp_path / "synth"
    code = main(["tamper", "synth", "--n", "6", "--size", "64", "--out", str(out)])
    assert code == 0
    tp, gt = sorted((out / "Tp").iterdir()), sorted((out / "Gt").iterdir())
    assert len(tp) == len(gt) == 6
    assert [p.name for p in tp] == [p.name for p in gt]
    assert Image.open(tp[0]).size == (64, 64)


@pytest.mark.skipif(not CASIA.is_dir(), reason="../shared/data/tamper/casia1-samples absent")
def test_eval_on_casia_samples_writes_table(tmp_path, checkpoint, capsys):
    out = tmp_path / "eval"
    code = main(["tamper", "eval", "--data", str(CASIA), "--checkpoint", str(checkpoint),
                 "--out", str(out)])  # fmt: skip
    assert code == 0
    table = (out / "eval.md").read_text()
    for name in ("ManTra-Net", "PSCC-Net", "MVSS-Net", "CAT-Net", "TruFor", "not the same"):
        assert name in table
    assert "0.721" in table and "stdc_tamper" in capsys.readouterr().out
    import json

    result = json.loads((out / "eval.json").read_text())
    assert result["n_images"] == 36 and 0 <= result["f1"] <= 1 and result["img_per_s"] > 0


def write_video(path: Path, frames: int, size: tuple[int, int], fourcc: str) -> None:
    """A small video of random frames; size = (W, H)."""
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 5.0, size)
    rng = np.random.default_rng(3)
    for _ in range(frames):
        writer.write(rng.integers(0, 255, (size[1], size[0], 3), np.uint8))
    writer.release()


def test_predict_video_streams_masks_and_frame_scores(tmp_path, checkpoint, capsys):
    import cv2

    write_video(tmp_path / "clip.mp4", 4, (40, 30), "mp4v")
    write_video(tmp_path / "old.avi", 3, (32, 24), "MJPG")
    (tmp_path / "fake.mp4").write_text("not a video")
    out = tmp_path / "o"
    files = [str(tmp_path / n) for n in ("clip.mp4", "old.avi", "fake.mp4")]
    code = main(["tamper", "predict", *files, "--out", str(out), "--checkpoint", str(checkpoint)])
    err = capsys.readouterr().err
    assert code == 1 and len([line for line in err.splitlines() if "fake.mp4" in line]) == 1
    for stem, n, size in (("clip", 4, (40, 30)), ("old", 3, (32, 24))):
        with open(out / f"{stem}_scores.csv") as f:
            rows = list(csv.DictReader(f))
        assert [int(r["frame"]) for r in rows] == list(range(n))
        cap = cv2.VideoCapture(str(out / f"{stem}_mask.mp4"))
        count = 0
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            count += 1
            assert (frame.shape[1], frame.shape[0]) == size
        cap.release()
        assert count == n
    with open(out / "scores.csv") as f:
        assert [r["name"] for r in csv.DictReader(f)] == ["clip", "old"]


@pytest.mark.skipif(default_checkpoint() is None, reason="no default checkpoint shipped")
def test_predict_works_out_of_the_box_with_the_shipped_checkpoint(tmp_path):
    torch.set_num_threads(1)
    image = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(5).integers(0, 255, (61, 90, 3), np.uint8)).save(image)
    assert main(["tamper", "predict", str(image), "--out", str(tmp_path / "out")]) == 0
    mask = Image.open(tmp_path / "out" / "photo_mask.png")
    assert mask.size == (90, 61) and mask.mode == "L"
    assert (tmp_path / "out" / "scores.csv").read_text().count("\n") == 2


def test_figure_rows_spread_over_the_f1_ranking():
    from lightattn.tamper.evaluate import ImagePrediction, figure_rows

    preds = []
    for i in range(7):
        mask = np.zeros((10, 10), np.uint8)
        mask[:, : i + 1] = 1
        prob = np.zeros((10, 10), np.float32)
        prob[:, :4] = 1.0  # F1 = 2·min(i+1, 4) / (i + 1 + 4)
        preds.append(ImagePrediction(f"im{i}", np.zeros((10, 10, 3), np.uint8), mask, prob, 0.5))
    preds.append(ImagePrediction("authentic", preds[0].image, np.zeros((10, 10), np.uint8),
                                 preds[0].prob, 0.5))  # fmt: skip
    rows = figure_rows(preds, 3)
    f1s = [f1 for _, f1 in rows]
    assert f1s == sorted(f1s, reverse=True) and len(rows) == 3
    assert rows[0][0].name == "im3" and f1s[0] == 1.0  # the best
    assert rows[-1][0].name == "im0" and f1s[-1] == pytest.approx(0.4)  # the worst
    assert all(p.name != "authentic" for p, _ in rows)
    with pytest.raises(ValueError):
        figure_rows(preds, 0)


def test_eval_figure_writes_a_png(tmp_path, checkpoint):
    rng = np.random.default_rng(4)
    for sub in ("Tp", "Gt"):
        (tmp_path / "d" / sub).mkdir(parents=True)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (30, 44, 3), np.uint8)).save(
            tmp_path / "d" / "Tp" / f"x{i}.png"
        )
        mask = np.zeros((30, 44), np.uint8)
        mask[5:15, 10 + i : 30] = 255
        Image.fromarray(mask).save(tmp_path / "d" / "Gt" / f"x{i}.png")
    png = tmp_path / "fig" / "pred.png"
    code = main(["tamper", "eval", "--data", str(tmp_path / "d"), "--checkpoint",
                 str(checkpoint), "--figure", str(png), "--figure-rows", "2"])  # fmt: skip
    assert code == 0
    with Image.open(png) as im:
        assert im.format == "PNG" and im.size[0] == 1000 and im.size[1] > 2 * 200


def test_serve_without_web_packages_is_one_line_exit_2(monkeypatch, capsys):
    from lightattn.tamper import serve

    def missing() -> None:
        raise ImportError("lightattn tamper serve needs fastapi, uvicorn and python-multipart")

    monkeypatch.setattr(serve, "require", missing)
    assert main(["tamper", "serve", "--port", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "fastapi" in err[0]


def test_inner_variants_cover_every_mechanism_and_flag_the_default():
    from lightattn import list_attention
    from lightattn.tamper.efficiency import DANET_LABEL, inner_variants

    base = {"width": 0.5, "inner": "window", "inner_kwargs": {"window_size": 4}}
    variants = inner_variants(base, "window")
    labels = [v.label for v in variants]
    assert labels[0] == DANET_LABEL and variants[0].kwargs["inner"] is None
    assert set(labels[1:]) == set(list_attention()) - {"position"}
    assert [v.label for v in variants if v.default] == ["window"]
    for v in variants:
        assert v.kwargs["width"] == 0.5
        assert ("inner_kwargs" in v.kwargs) == (v.label == "window")


def test_measure_rows_and_table():
    from lightattn.tamper.efficiency import Variant, add_f1, markdown_table, measure

    variants = [
        Variant("linear", {"width": 0.25, "inner": "linear"}, default=True),
        Variant("none (DANet N×N)", {"width": 0.25, "inner": None}),
    ]
    result = measure(variants, sizes=(48, 64), threads=1, rounds=2)
    for row in result["rows"]:
        model = create_tamper_model(**row["kwargs"])
        assert row["params"] == sum(p.numel() for p in model.parameters())
        for s in (48, 64):
            cell = row["sizes"][str(s)]
            assert cell["gmacs"] == pytest.approx(model.macs(s, s) / 1e9)
            assert 0 < cell["ms"] == pytest.approx(min(cell["ms_rounds"]), abs=1e-2)
            assert cell["ms"] <= cell["ms_q1"] <= cell["ms_median"] <= cell["ms_q3"]
            assert len(cell["ms_rounds"]) == 2
            assert cell["peak_mb"] is None or cell["peak_mb"] > 0
    assert result["rows"][0]["sizes"]["48"]["ratio"] == 1.0
    assert result["rows"][1]["sizes"]["64"]["gmacs"] > result["rows"][1]["sizes"]["48"]["gmacs"]
    add_f1(result, {"linear": 0.25})
    table = markdown_table(result)
    assert "**linear** (default)" in table and "0.250" in table and "| – |" in table
    assert "GMACs 64²" in table and "interleaved" in table and "pixel F1 (CASIA)" in table
    add_f1(result, {"linear": 0.3}, label="F1 (fine-tuned)")
    table = markdown_table(result)
    assert "| F1 (fine-tuned) |" in table and "0.300" in table
    with pytest.raises(ValueError):
        measure(variants, sizes=(16,), threads=1, rounds=1)


def test_bench_cli_writes_table_and_rejects_bad_input(tmp_path, capsys):
    out = tmp_path / "eff"
    code = main(["tamper", "bench", "--inner", "linear", "none", "--sizes", "64",
                 "--rounds", "1", "--threads", "1", "--out", str(out)])  # fmt: skip
    assert code == 0
    md = (out / "efficiency.md").read_text()
    assert "linear" in md and "DANet" in md and "ms 64²" in md
    assert "Command: `lightattn tamper bench --threads 1 --rounds 1 --sizes 64 --inner " in md
    import json

    rows = json.loads((out / "efficiency.json").read_text())["rows"]
    assert [r["label"] for r in rows] == ["none (DANet N×N)", "linear"]
    (tmp_path / "good.json").write_text('{"linear": 0.2, "none": 0.1}')
    code = main(["tamper", "bench", "--inner", "linear", "none", "--sizes", "48", "--rounds",
                 "1", "--threads", "1", "--f1", str(tmp_path / "good.json"), "--f1-label",
                 "F1 tuned", "--out", str(out)])  # fmt: skip
    md = (out / "efficiency.md").read_text()
    assert code == 0 and "| F1 tuned |" in md and "0.200 |" in md and "0.100 |" in md
    assert "--f1-label 'F1 tuned'" in md
    capsys.readouterr()
    (tmp_path / "f1.json").write_text("[1, 2]")
    for extra in (["--inner", "bogus"], ["--sizes", "16"], ["--f1", str(tmp_path / "f1.json")]):
        assert main(["tamper", "bench", "--rounds", "1", "--threads", "1", *extra]) == 2, extra
        assert len(capsys.readouterr().err.strip().splitlines()) == 1
