"""lightattn train / eval: steps per attention kind, learning, exact resume after a kill,
DDP = 1 process, the Castling switch, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from lightattn.cli.main import main
from lightattn.train.checkpoint import latest_checkpoint, read_weights
from lightattn.train.config import TrainConfig, parse_kwargs
from lightattn.train.loop import lr_factor, train

TINY = "embed_dim=16,depths=1,1,1,1,num_heads=1,1,2,2,window_size=2,patch_size=2"
COUNTS = {"train": 96, "val": 32, "test": 32}


def tiny_config(tmp_path: Path, **overrides) -> TrainConfig:
    values = {
        "data": "digits", "out": str(tmp_path / "run"), "model": "swin",
        "model_kwargs": parse_kwargs(TINY), "img_size": 16, "epochs": 1, "batch_size": 32,
        "lr": 3e-3, "warmup_epochs": 0.0, "drop_path": 0.0, "threads": 1, "progress": False,
        "data_cache": str(tmp_path / "cache"),
    }  # fmt: skip
    values.update(overrides)
    return TrainConfig(**values)


def cli(*args: str, env: dict | None = None, torchrun: bool = False) -> subprocess.CompletedProcess:
    head = [sys.executable, "-m", "lightattn"]
    if torchrun:
        head = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                "--standalone", "-m", "lightattn"]  # fmt: skip
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([*head, *args], capture_output=True, text=True, env=full_env, timeout=300)


def weights(run: Path, name: str = "final.safetensors") -> dict[str, torch.Tensor]:
    state, _ = read_weights(run / name)
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}


def test_parse_kwargs_reads_tuples_and_types():
    assert parse_kwargs("embed_dim=32,depths=2,2,6,2,linear=true,ratio=0.5,name=x") == {
        "embed_dim": 32, "depths": (2, 2, 6, 2), "linear": True, "ratio": 0.5, "name": "x",
    }  # fmt: skip
    with pytest.raises(ValueError, match="key=value"):
        parse_kwargs("2,2")


def test_lr_warms_up_then_decays_to_the_floor():
    values = [lr_factor(s, 10, 100, 0.01) for s in range(100)]
    assert values[0] == pytest.approx(0.1) and values[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(values[9:], values[10:], strict=False))
    assert values[-1] == pytest.approx(0.01, abs=1e-3)


@pytest.mark.parametrize("attn", ["mhsa", "hilo", "sra", "linear", "deformable", "castling"])
def test_a_few_steps_for_each_attention_kind(tmp_path, attn):
    cfg = tiny_config(tmp_path, attn=attn, max_steps=2, epochs=1)
    summary = train(cfg)
    assert summary["steps"] == 2
    run = Path(cfg.out)
    for name in (
        "config.json",
        "metrics.csv",
        "metrics.jsonl",
        "final.safetensors",
        "best.safetensors",
    ):
        assert (run / name).is_file(), name
    assert all(torch.isfinite(v).all() for v in weights(run).values())
    if attn == "castling":  # the final checkpoint is switched; accuracy before and after
        assert "test_acc_switched" in summary
        state, _ = read_weights(run / "final.safetensors")
        extra = [v for k, v in state.items() if k.endswith("_extra_state")]
        assert extra and all(v["aux"] is False for v in extra)


def test_loss_decreases_on_a_learnable_set(tmp_path):
    cfg = tiny_config(tmp_path, epochs=3, batch_size=32, lr=5e-3)
    train(cfg)
    rows = [json.loads(line) for line in (Path(cfg.out) / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 3
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    assert rows[-1]["val_acc"] > 0.3  # 10 classes: chance is 0.1


def run_args(tmp_path: Path, out: str, *extra: str) -> list[str]:
    return [
        "train", "--data", "digits", "--out", str(tmp_path / out), "--model", "swin",
        "--model-kwargs", TINY, "--img-size", "16", "--epochs", "2", "--batch-size", "64",
        "--lr", "3e-3", "--drop-path", "0.1", "--threads", "1", "--no-progress",
        "--checkpoint-every", "4", "--max-steps", "14", *extra,
    ]  # fmt: skip


def test_resume_after_a_kill_mid_epoch_equals_an_uninterrupted_run(tmp_path):
    """22 steps per epoch; killed abruptly after step 10 (last checkpoint: step 8), resumed
    from step 8: the same weights, bit for bit, as a run never interrupted."""
    whole = cli(*run_args(tmp_path, "whole"))
    assert whole.returncode == 0, whole.stderr
    killed = cli(*run_args(tmp_path, "resumed"), env={"LIGHTATTN_KILL_AT_STEP": "10"})
    assert killed.returncode == 137
    assert latest_checkpoint(tmp_path / "resumed") is not None
    assert not (tmp_path / "resumed" / "final.safetensors").exists()
    resumed = cli(*run_args(tmp_path, "resumed", "--resume"))
    assert resumed.returncode == 0, resumed.stderr
    a, b = weights(tmp_path / "whole"), weights(tmp_path / "resumed")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_two_process_ddp_equals_one_process(tmp_path):
    """Same global batch (64 = 2 x 32), no stochastic depth and no augmentation (their random
    draws differ per process): DDP's averaged gradient is the one-process gradient up to
    float summation order."""
    args = ["--drop-path", "0", "--augment", "off", "--max-steps", "6", "--checkpoint-every", "0"]
    one = cli(*run_args(tmp_path, "one"), *args)
    assert one.returncode == 0, one.stderr
    two = cli(*run_args(tmp_path, "two"), *args, torchrun=True)
    assert two.returncode == 0, two.stderr
    a, b = weights(tmp_path / "one"), weights(tmp_path / "two")
    diff = torch.cat([(a[k] - b[k]).flatten() for k in a])
    norm = torch.cat([a[k].flatten() for k in a])
    # 6 AdamW steps at lr 3e-3: a summation-order difference moves a weight by far less than
    # one step (3e-3); the whole weight vector agrees to 1e-5 relative
    assert float(diff.abs().max()) < 3e-4, float(diff.abs().max())
    assert float(diff.norm() / norm.norm()) < 1e-5, float(diff.norm() / norm.norm())


def test_eval_reports_accuracy_confusion_and_castling_switch(tmp_path, capsys):
    cfg = tiny_config(tmp_path, attn="castling", max_steps=3)
    train(cfg)
    ckpt = Path(cfg.out) / "best.safetensors"  # not switched yet: eval switches a copy
    assert main(["eval", str(ckpt), "--out", str(tmp_path / "eval")]) == 0
    result = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert 0 <= result["acc"] <= 1 and result["img_per_s"] > 0
    assert set(result["castling"]) >= {"acc_before_switch", "acc_after_switch"}
    assert (tmp_path / "eval" / "confusion.png").stat().st_size > 1000
    assert sum(map(sum, result["confusion"])) == result["n"]


def image_folder(root: Path, classes: int) -> Path:
    for c in range(classes):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (12, 12), (40 * c, 9 * i, 0)).save(root / f"class{c}" / f"{i}.png")
    return root


def base_args(tmp_path: Path, data: str, out: str = "bad") -> list[str]:
    return ["train", "--data", data, "--out", str(tmp_path / out), "--model-kwargs", TINY,
            "--img-size", "16", "--no-progress", "--max-steps", "1"]  # fmt: skip


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing", "does not exist"),
        ("empty", "no class"),
        ("one-class", "class"),
        ("too-small", "img_size=0"),
        ("resume-nothing", "no checkpoint"),
        ("other-model", "holds model"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, case, message):
    args = base_args(tmp_path, "digits")
    if case == "missing":
        args = base_args(tmp_path, str(tmp_path / "nowhere"))
    elif case == "empty":
        (tmp_path / "empty").mkdir()
        args = base_args(tmp_path, str(tmp_path / "empty"))
    elif case == "one-class":
        args = base_args(tmp_path, str(image_folder(tmp_path / "one", 1)))
    elif case == "too-small":
        args = [*base_args(tmp_path, "digits"), "--img-size", "0"]
    elif case == "resume-nothing":
        args = [*args, "--resume"]
    elif case == "other-model":
        train(tiny_config(tmp_path, out=str(tmp_path / "bad"), max_steps=1))
        before = sorted(p.name for p in (tmp_path / "bad").iterdir())
        args = [*args, "--resume", "--model", "pvt_v2"]
    code = main(args)
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert message in err.lower() or message in err, err
    assert len(err.splitlines()) == 1, err
    if case == "other-model":
        assert sorted(p.name for p in (tmp_path / "bad").iterdir()) == before


def test_an_existing_run_is_not_overwritten(tmp_path, capsys):
    cfg = tiny_config(tmp_path, max_steps=1)
    train(cfg)
    assert main(base_args(tmp_path, "digits", out="run")) == 2
    assert "already holds a run" in capsys.readouterr().err


def test_bf16_autocast_trains(tmp_path):
    summary = train(tiny_config(tmp_path, amp="bf16", max_steps=3))
    assert summary["steps"] == 3
    assert all(torch.isfinite(v).all() for v in weights(Path(tmp_path / "run")).values())


def test_compare_trains_every_mechanism_the_same_and_marks_the_front(tmp_path):
    from lightattn.train.compare import compare, pareto

    base = tiny_config(
        tmp_path, data="pathfinder", out=str(tmp_path / "cmp"), model_kwargs={},
        pathfinder_counts={"train": 64, "val": 32, "test": 32}, max_steps=2,
    )  # fmt: skip
    result = compare(base, "mhsa,hilo", budget_minutes=5, latency_batch=2)
    assert [r["attn"] for r in result["rows"]] == ["mhsa", "hilo"]
    assert {r["steps"] for r in result["rows"]} == {2}
    for name in ("compare.md", "compare.json", "compare.png"):
        assert (tmp_path / "cmp" / name).is_file()
    rows = [
        {"attn": "a", "test_acc": 0.9, "ms": 2.0},
        {"attn": "b", "test_acc": 0.8, "ms": 1.0},
        {"attn": "c", "test_acc": 0.7, "ms": 3.0},  # dominated by both
    ]
    assert pareto(rows, "ms") == {"a", "b"}
