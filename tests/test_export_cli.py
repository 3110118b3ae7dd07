"""`lightattn export`: a mechanism, a model from a `lightattn train` checkpoint and the tamper
network exported and checked in onnxruntime at three sizes; every bad input is one line and
exit code 2; a failed export or a difference over 1e-4 is exit code 1."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import lightattn
from lightattn.cli import main
from lightattn.export import onnx as export_onnx_mod
from lightattn.export.onnx import ort_session, run_ort
from lightattn.train import TrainConfig
from lightattn.train.checkpoint import save_weights

FAST = ["--min-time", "0"]
SWIN = {"embed_dim": 16, "depths": (1, 1, 1, 1), "num_heads": (1, 1, 2, 2), "attn": "mhsa"}
ROW = re.compile(r"^\s*(\d+)\s+(\d+)x(\d+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)×")


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["export", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def rows(out: str) -> list[tuple[int, tuple[int, int], float]]:
    """(batch, (H, W), max |ORT - eager|) of each table line."""
    found = [ROW.match(line) for line in out.splitlines()]
    return [(int(m[1]), (int(m[2]), int(m[3])), float(m[4])) for m in found if m]


@pytest.fixture(scope="module")
def linear_onnx(tmp_path_factory) -> tuple[Path, str]:
    """`lightattn export linear ... --int8` run once: the file and the printed table."""
    out = tmp_path_factory.mktemp("linear") / "l.onnx"
    argv = ["export", "linear", "--dim", "16", "--heads", "2", "--kwargs", "eps=1e-5",
            "--size", "6x5", "--out", str(out), "--int8", *FAST]  # fmt: skip
    torch.set_num_threads(1)
    from contextlib import redirect_stdout
    from io import StringIO

    buffer = StringIO()
    with redirect_stdout(buffer):
        code = main(argv)
    assert code == 0, buffer.getvalue()
    return out, buffer.getvalue()


def test_mechanism_is_checked_at_three_sizes_and_int8_written(linear_onnx):
    path, out = linear_onnx
    fp32, int8 = out.split("int8 dynamic")
    checked = rows(fp32)
    assert [(b, s) for b, s, _ in checked] == [(2, (6, 5)), (1, (13, 19)), (3, (3, 2))]
    assert all(d <= 1e-4 for _, _, d in checked)
    assert "linear dim 16, 2 heads, eps=1e-05" in fp32
    assert len(rows(int8)) == 3
    int8_path = path.with_name("l.int8.onnx")
    session = ort_session(int8_path)
    (y,) = run_ort(session, torch.randn(1, 16, 7, 9))
    assert y.shape == (1, 16, 7, 9) and np.isfinite(y).all()


def train_checkpoint(path: Path, model_kwargs: dict, weights_from: dict | None = None) -> dict:
    """A `lightattn train`-style checkpoint of swin with `model_kwargs` (5 classes), weights
    from a model built with `weights_from` (default: the same); returns its state_dict."""
    cfg = TrainConfig(data="digits", out=str(path.parent), model="swin",
                      model_kwargs={k: v for k, v in model_kwargs.items() if k != "attn"},
                      attn=model_kwargs.get("attn"), img_size=40)  # fmt: skip
    torch.manual_seed(1)
    model = lightattn.create_model("swin", num_classes=5, **(weights_from or model_kwargs))
    meta = {"config": json.loads(cfg.to_json()), "num_classes": 5, "in_chans": 3, "img_size": 40}
    save_weights(model, path, meta)
    return model.state_dict()


def test_model_from_a_train_checkpoint(tmp_path, capsys):
    """The model is rebuilt from the checkpoint (its img_size is the export size), its
    weights are the checkpoint's, the output is named logits, and --model agrees."""
    ckpt = tmp_path / "best.safetensors"
    state = train_checkpoint(ckpt, SWIN)
    out = tmp_path / "m.onnx"
    code, stdout, _ = run(capsys, "--model", "swin", "--checkpoint", str(ckpt), "--out",
                          str(out), *FAST)  # fmt: skip
    assert code == 0, stdout
    checked = rows(stdout)
    assert [(b, s) for b, s, _ in checked] == [(2, (40, 40)), (1, (75, 101)), (3, (33, 47))]
    assert all(d <= 1e-4 for _, _, d in checked)
    session = ort_session(out)
    assert [o.name for o in session.get_outputs()] == ["logits"]
    model = lightattn.create_model("swin", num_classes=5, **SWIN).eval()
    model.load_state_dict(state)
    x = torch.randn(2, 3, 50, 61)
    with torch.no_grad():
        np.testing.assert_allclose(run_ort(session, x)[0], model(x).numpy(), atol=1e-4)


@pytest.mark.slow
def test_tamper_shipped_checkpoint(tmp_path, capsys):
    out = tmp_path / "t.onnx"
    code, stdout, _ = run(capsys, "--tamper", "--img-size", "64", "--out", str(out), *FAST)
    assert code == 0, stdout
    assert [s for _, s, _ in rows(stdout)] == [(64, 64), (75, 101), (33, 47)]
    names = [o.name for o in ort_session(out).get_outputs()]
    assert names == ["mask_logits", "score_logits"]


def bad_cases(tmp: Path) -> list[tuple[list[str], str]]:
    """(arguments, a piece of the one-line message)."""
    good = tmp / "good.safetensors"
    train_checkpoint(good, SWIN)
    other = tmp / "other.safetensors"  # config says SWIN, weights of a wider swin
    train_checkpoint(other, SWIN, weights_from={**SWIN, "embed_dim": 32})
    tamper = tmp / "tamper.safetensors"
    from lightattn.tamper.checkpoint import save_tamper_model

    save_tamper_model(torch.nn.Linear(2, 2), tamper, {"width": 0.25})
    out = str(tmp / "x.onnx")
    return [
        (["windw", "--out", out], "did you mean 'window'"),
        (["--model", "swin_x", "--out", out], "unknown model name='swin_x'"),
        (["linear", "--opset", "17", "--out", out], "supported: 18..23"),
        (["linear", "--opset", "24", "--out", out], "opset=24 is not supported"),
        (["linear", "--kwargs", "eps", "--out", out], "must look like key=value"),
        (["linear", "--kwargs", "nope=1", "--out", out], "nope"),
        (["--model", "swin", "--checkpoint", str(tmp / "no.safetensors"), "--out", out],
         "does not exist"),
        (["--model", "pvt_v2_b0", "--checkpoint", str(good), "--out", out],
         "does not match --model 'pvt_v2_b0'"),
        (["--checkpoint", str(good), "--model-kwargs", "embed_dim=32", "--out", out],
         "does not match"),
        (["--checkpoint", str(other), "--out", out], "does not fit"),
        (["--checkpoint", str(tamper), "--out", out], "not a lightattn train checkpoint"),
        (["--tamper", "--checkpoint", str(good), "--out", out], "not a lightattn tamper"),
        (["--tamper", "--checkpoint", str(tmp / "no.safetensors"), "--out", out],
         "does not exist"),
        (["--out", out], "give one of NAME"),
        (["linear", "--model", "swin", "--out", out], "give one of NAME"),
        (["linear", "--checkpoint", str(good), "--out", out], "give one of NAME"),
        (["--model", "swin", "--kwargs", "a=1", "--out", out], "--kwargs goes with"),
        (["--model", "swin", "--img-size", "16", "--out", out], "H and W must be >= 33"),
        (["linear", "--out", str(tmp)], "is a directory"),
        (["linear"], "--out"),
    ]  # fmt: skip


def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    for argv, message in bad_cases(tmp_path):
        code, stdout, stderr = run(capsys, *argv)
        assert code == 2, (argv, stdout, stderr)
        assert stderr.count("\n") == 1 and message in stderr, (argv, stderr)
        assert stderr.startswith("lightattn export: error:"), stderr
    assert not (tmp_path / "x.onnx").exists()


def test_failed_export_and_large_difference_exit_1(tmp_path, capsys, monkeypatch, linear_onnx):
    def fail(*args, **kwargs):
        raise export_onnx_mod.ExportError("torch.export failed: a size decision")

    monkeypatch.setattr(export_onnx_mod, "export_onnx", fail)
    code, _, stderr = run(capsys, "linear", "--dim", "16", "--out", str(tmp_path / "a.onnx"))
    assert code == 1 and "export failed: torch.export failed: a size decision" in stderr

    def copy(module, example, path, **kwargs):  # the file exported before, reused
        shutil.copy(linear_onnx[0], path)
        return Path(path)

    monkeypatch.setattr(export_onnx_mod, "export_onnx", copy)
    monkeypatch.setattr(export_onnx_mod, "max_abs_diff", lambda got, want: 0.5)
    argv = ["linear", "--dim", "16", "--heads", "2", "--out", str(tmp_path / "b.onnx"), *FAST]
    code, stdout, _ = run(capsys, *argv)
    assert code == 1 and "FAIL: max |ORT - eager| = 0.5 > 0.0001" in stdout
    assert all(d == 0.5 for _, _, d in rows(stdout)) and stdout.count("  FAIL") == 3


@pytest.mark.slow
def test_features_only_model_names_its_maps(tmp_path, capsys):
    out = tmp_path / "f.onnx"
    kwargs = "embed_dim=16,depths=1,1,1,1,num_heads=1,1,2,2,attn=mhsa,features_only=True"
    code, stdout, _ = run(capsys, "--model", "swin", "--model-kwargs", kwargs, "--img-size",
                          "64", "--out", str(out), *FAST)  # fmt: skip
    assert code == 0, stdout
    assert all(d <= 1e-4 for _, _, d in rows(stdout)) and "(random weights)" in stdout
    session = ort_session(out)
    assert [o.name for o in session.get_outputs()] == [f"features_{i}" for i in range(4)]
    maps = run_ort(session, torch.randn(1, 3, 75, 101))
    assert [m.shape[-2:] for m in maps] == [(19, 26), (10, 13), (5, 7), (3, 4)]
