"""Training of the tamper network: files, falling loss, checkpoints that predict, exact
resume after a kill, bad data and out dirs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lightattn.tamper.checkpoint import load_tamper_model
from lightattn.tamper.synth import write_synthetic_set
from lightattn.tamper.train import (
    TamperTrainConfig,
    crop_pair,
    split_indices,
    train_tamper,
    validate,
)

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 synthetic 64x64 samples from the bundled photos: 10 train, 2 val (manifest)."""
    root = tmp_path_factory.mktemp("tamper-data")
    write_synthetic_set(None, 12, root, seed=0, size=64)
    return root


def config(data: Path, out: Path, **kw: object) -> TamperTrainConfig:
    """A tiny, fast run: width 0.25, linear attention, 64 px crops, batch 4 (2 steps/epoch)."""
    base = dict(width=0.25, inner="linear", img_size=64, batch_size=4, epochs=10, lr=3e-3,
                progress=False, threads=1)  # fmt: skip
    base.update(kw)
    return TamperTrainConfig(data=str(data), out=str(out), **base)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def run(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("tamper-run") / "run"
    return out, train_tamper(config(data_dir, out))


def test_run_writes_its_files_and_the_loss_falls(run: tuple[Path, dict]) -> None:
    out, summary = run
    for name in ("best.safetensors", "final.safetensors", "metrics.csv", "metrics.jsonl",
                 "summary.json", "config.json", "last.json"):  # fmt: skip
        assert (out / name).is_file(), name
    assert summary["steps"] == 20 and summary["train_images"] == 10
    assert summary["val_images"] == 2 and 0.0 <= summary["best_val_f1"] <= 1.0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 10
    losses = [r["train_loss"] for r in rows]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-3:]) / 3 < 0.9 * sum(losses[:2]) / 2, losses


@pytest.mark.parametrize("name", ["best", "final"])
def test_checkpoints_rebuild_and_predict_a_mask_of_the_input_size(
    run: tuple[Path, dict], name: str
) -> None:
    model, meta = load_tamper_model(run[0] / f"{name}.safetensors")
    assert meta["model"] == {"variant": "stdc1", "width": 0.25, "inner": "linear"}
    assert meta["config"]["img_size"] == 64 and "f1" in meta["val"]
    with torch.no_grad():
        out = model(torch.rand(1, 3, 45, 71))
    assert out["mask_logits"].shape == (1, 1, 45, 71)
    assert torch.isfinite(out["mask_logits"]).all()


def test_out_dir_with_a_run_is_refused_unless_resume(run: tuple[Path, dict]) -> None:
    out, _ = run
    with pytest.raises(ValueError, match="already holds a run"):
        train_tamper(config(Path(json.loads((out / "config.json").read_text())["data"]), out))


def test_resume_without_a_checkpoint_is_refused(data_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="nothing to resume"):
        train_tamper(config(data_dir, tmp_path / "empty"), resume=True)


def test_bad_data_dir_raises(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="missing"):
        train_tamper(config(tmp_path / "missing", tmp_path / "a"))
    (tmp_path / "empty" / "Tp").mkdir(parents=True)
    (tmp_path / "empty" / "Gt").mkdir()
    with pytest.raises(ValueError, match="empty"):
        train_tamper(config(tmp_path / "empty", tmp_path / "b"))


def test_crop_pads_small_images_and_moves_image_and_mask_together() -> None:
    rng = __import__("numpy").random.default_rng(0)
    image = torch.arange(3 * 20 * 30, dtype=torch.float32).view(3, 20, 30) + 1
    mask = (image[:1] % 7 == 0).float()
    for _ in range(10):
        x, m = crop_pair(image, mask, 25, rng)
        assert x.shape == (3, 25, 25) and m.shape == (1, 25, 25)
        inside = x[0] > 0  # zero padding is outside the image
        assert torch.equal(m[0][inside], (x[0][inside] % 7 == 0).float())


def test_split_without_manifest_is_a_seeded_ninety_ten_cut(tmp_path: Path) -> None:
    names = [f"img{i:02d}" for i in range(20)]
    train, val = split_indices(names, tmp_path, seed=0)
    assert len(val) == 2 and sorted(train + val) == list(range(20))
    assert split_indices(names, tmp_path, seed=0) == (train, val)


def test_chunked_validation_equals_one_evaluate_call(
    run: tuple[Path, dict], data_dir: Path
) -> None:
    from lightattn.tamper import metrics
    from lightattn.tamper.data import TamperDataset

    model, meta = load_tamper_model(run[0] / "final.safetensors")
    data = TamperDataset(data_dir)
    cfg = TamperTrainConfig(**meta["config"])
    idx = list(range(5))  # train_000001 is authentic: both image classes present
    chunked = validate(model, data, idx, cfg, torch.device("cpu"), chunk=2)
    with torch.no_grad():
        outs = [model(data[i][0][None]) for i in idx]
    probs = [torch.sigmoid(o["mask_logits"])[0, 0].numpy() for o in outs]
    scores = [float(torch.sigmoid(o["score_logits"])[0]) for o in outs]
    whole = metrics.evaluate(probs, [data[i][1][0].numpy() for i in idx], scores)
    for key in ("f1", "iou", "auc", "f1_best_per_image", "image_auc", "image_acc", "n_tampered"):
        assert chunked[key] == pytest.approx(whole[key], abs=1e-9), key


def _train_in_subprocess(data: Path, out: Path, resume: bool, env: dict[str, str]) -> int:
    cfg = config(data, out, epochs=5, checkpoint_every=5)
    code = (
        "import torch; torch.set_num_threads(1)\n"
        "from lightattn.tamper.train import TamperTrainConfig, train_tamper\n"
        f"train_tamper(TamperTrainConfig(**{cfg.__dict__!r}), resume={resume})\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode in (0, 137), proc.stderr
    return proc.returncode


def test_resume_after_a_kill_mid_epoch_equals_an_uninterrupted_run(
    data_dir: Path, tmp_path: Path
) -> None:
    """2 steps per epoch, 10 steps; killed right after step 5 (checkpointed mid-epoch),
    resumed: the same final weights, bit for bit."""
    train_tamper(config(data_dir, tmp_path / "whole", epochs=5, checkpoint_every=5))
    killed = _train_in_subprocess(data_dir, tmp_path / "resumed", False,
                                  {"LIGHTATTN_KILL_AT_STEP": "5"})  # fmt: skip
    assert killed == 137
    assert not (tmp_path / "resumed" / "final.safetensors").exists()
    assert _train_in_subprocess(data_dir, tmp_path / "resumed", True, {}) == 0
    a = load_file(str(tmp_path / "whole" / "final.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "final.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    rows = (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["step"] for r in rows] == [2, 4, 6, 8, 10]


def test_init_copies_every_fitting_tensor_and_keeps_the_new_inner_fresh(
    run: tuple[Path, dict], tmp_path: Path
) -> None:
    from lightattn.tamper.network import create_tamper_model
    from lightattn.tamper.train import load_init

    trained = load_file(str(run[0] / "final.safetensors"))
    torch.manual_seed(1)
    model = create_tamper_model(width=0.25, inner="mhsa")  # same qkv/proj shapes as linear
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    report = load_init(model, str(run[0] / "final.safetensors"), skip=("position.",))
    state = model.state_dict()
    moved = [k for k in state if k in trained and not k.startswith("position.")]
    assert report["loaded"] == len(moved) and report["fresh"] == len(state) - len(moved)
    assert all(torch.equal(state[k], trained[k]) for k in moved)
    assert any(k.startswith("backbone.") for k in moved)
    kept = [k for k in state if k not in moved]
    assert kept and all(k.startswith("position.") for k in kept)
    assert all(torch.equal(state[k], fresh[k]) for k in kept)
    other = tmp_path / "other.safetensors"
    from safetensors.torch import save_file

    save_file({"unrelated": torch.zeros(3)}, str(other))
    with pytest.raises(ValueError, match="other.safetensors"):
        load_init(model, str(other))
    with pytest.raises(ValueError, match="init=.*no tensor fits"):
        load_init(model, str(run[0] / "final.safetensors"), skip=("",))


def test_a_run_can_start_from_another_runs_weights(
    run: tuple[Path, dict], data_dir: Path, tmp_path: Path
) -> None:
    init = str(run[0] / "final.safetensors")
    cfg = config(data_dir, tmp_path / "ft", inner="hilo", epochs=1, init=init,
                 init_skip=("position.",))  # fmt: skip
    summary = train_tamper(cfg)
    assert summary["init"]["from"] == init and summary["init"]["loaded"] > 50
    assert summary["init"]["fresh"] > 0 and summary["steps"] == 2
    meta = load_tamper_model(tmp_path / "ft" / "final.safetensors")[1]
    assert meta["model"]["inner"] == "hilo" and meta["config"]["init"] == init
