"""Int8 quantization (lightattn.export.quantize): a tiny model trained for a few seconds on
digits keeps its accuracy within 3 points of fp32 under torch dynamic, ORT dynamic and ORT
static int8, whose weights are int8; every mechanism runs with int8 linears."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn
from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear
from torch.utils.data import DataLoader, TensorDataset

import lightattn
from lightattn.export.onnx import ort_session, run_ort
from lightattn.export.quantize import (
    calibration_batches,
    export_classifier,
    quantize_dynamic_torch,
    quantize_onnx_dynamic,
    quantize_onnx_static,
)
from lightattn.models import create_model
from lightattn.train.data import build_dataset

ACC_POINTS = 3.0  # int8 accuracy within this many points of fp32 on the 358 held-out images
AGREE = 0.95  # and the same prediction as fp32 on at least this fraction
REL_ERR = 0.05  # a mechanism's int8 output: ||int8 - fp32|| / ||fp32||


def stack(dataset) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = zip(*(dataset[i] for i in range(len(dataset))), strict=True)
    return torch.stack(images), torch.tensor(labels)


@pytest.fixture(scope="module")
def digits():
    """(train images, train labels, held-out images, held-out labels) at 16x16."""
    bundle = build_dataset("digits", 16, augment=False)
    x_train, y_train = stack(bundle["train"])
    x_val, y_val = stack(bundle["val"])
    x_test, y_test = stack(bundle["test"])
    return x_train, y_train, torch.cat([x_val, x_test]), torch.cat([y_val, y_test])


@pytest.fixture(scope="module")
def trained(digits):
    """A 2-stage mhsa Swin (embed 32, patch 4) trained 250 steps: ~95% held-out accuracy."""
    x_train, y_train, _, _ = digits
    torch.manual_seed(0)
    model = create_model(
        "swin", embed_dim=32, depths=(1, 1), num_heads=(1, 2), patch_size=4, window_size=2,
        num_classes=10, in_chans=1, attn="mhsa",
    )  # fmt: skip
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(250):
        index = torch.randint(0, len(x_train), (64,), generator=generator)
        loss = nn.functional.cross_entropy(model(x_train[index]), y_train[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


@pytest.fixture(scope="module")
def fp32(trained, digits, tmp_path_factory) -> tuple[Path, np.ndarray]:
    """(the trained model as ONNX with a dynamic batch, its fp32 logits on the held-out set)."""
    path = tmp_path_factory.mktemp("onnx") / "fp32.onnx"
    example = digits[2][:2]
    export_classifier(trained, example, path)
    with torch.no_grad():
        return path, trained(digits[2]).numpy()


def run_onnx(path: Path, images: torch.Tensor) -> np.ndarray:
    return run_ort(ort_session(path, threads=1), images)[0]


def check_accuracy(logits: np.ndarray, reference: np.ndarray, labels: torch.Tensor) -> None:
    truth = labels.numpy()
    acc, acc_fp32 = (logits.argmax(1) == truth).mean(), (reference.argmax(1) == truth).mean()
    assert acc_fp32 > 0.85, f"the fixture model did not learn: fp32 accuracy {acc_fp32:.3f}"
    assert 100 * (acc_fp32 - acc) <= ACC_POINTS, f"int8 {acc:.3f} vs fp32 {acc_fp32:.3f}"
    assert (logits.argmax(1) == reference.argmax(1)).mean() >= AGREE


def op_counts(path: Path) -> Counter:
    return Counter(n.op_type for n in onnx.load(str(path)).graph.node)


def int8_initializers(path: Path) -> list[onnx.TensorProto]:
    graph = onnx.load(str(path)).graph
    return [t for t in graph.initializer if t.data_type == onnx.TensorProto.INT8]


def weight_matmuls(path: Path) -> int:
    """MatMul/Gemm nodes of a float model with a constant (weight) input."""
    graph = onnx.load(str(path)).graph
    weights = {t.name for t in graph.initializer}
    return sum(
        n.op_type in ("MatMul", "Gemm") and any(i in weights for i in n.input) for n in graph.node
    )


def test_torch_dynamic_has_int8_linears_and_keeps_accuracy(trained, digits, fp32):
    linears = sum(type(m) is nn.Linear for m in trained.modules())
    quantized = quantize_dynamic_torch(trained)
    dynamic = [m for m in quantized.modules() if isinstance(m, DynamicLinear)]
    assert not any(type(m) is nn.Linear for m in quantized.modules())
    assert len(dynamic) == linears > 0
    assert all(m.weight().dtype == torch.qint8 for m in dynamic)
    assert any(type(m) is nn.Linear for m in trained.modules()), "the original was modified"
    with torch.no_grad():
        logits = quantized(digits[2]).numpy()
    check_accuracy(logits, fp32[1], digits[3])


def test_onnx_dynamic_has_int8_weights_and_keeps_accuracy(digits, fp32, tmp_path):
    path = quantize_onnx_dynamic(fp32[0], tmp_path / "dynamic.onnx")
    ops = op_counts(path)
    assert ops["MatMulInteger"] == weight_matmuls(fp32[0]) > 0
    assert ops["DynamicQuantizeLinear"] > 0
    assert len(int8_initializers(path)) >= ops["MatMulInteger"]
    check_accuracy(run_onnx(path, digits[2]), fp32[1], digits[3])


@pytest.mark.parametrize("mode", ["dynamic", "static"])
def test_onnx_wide_uniform_weights_stay_accurate(mode, tmp_path):
    """Weights spread over the whole int8 range and non-negative inputs: without 7-bit
    weights, AVX2's u8·s8 pair sums saturate (~9% error on this machine, 0.8% with)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(256, 64)).eval()
    nn.init.uniform_(model[1].weight, -1.0, 1.0)
    x = torch.rand(32, 1, 16, 16)
    fp32 = export_classifier(model, x[:2], tmp_path / "fp32.onnx")
    if mode == "dynamic":
        path = quantize_onnx_dynamic(fp32, tmp_path / "int8.onnx")
    else:
        path = quantize_onnx_static(fp32, tmp_path / "int8.onnx", x)
    with torch.no_grad():
        want = model(x).numpy()
    assert np.linalg.norm(run_onnx(path, x) - want) / np.linalg.norm(want) < 0.03


def dequantized_inputs(path: Path, weights_only: bool = False) -> dict[str, str]:
    """{node name: op type} of the nodes of a QDQ model that read a DequantizeLinear output
    (with `weights_only`, one that dequantizes an initializer: an int8 weight)."""
    graph = onnx.load(str(path)).graph
    constants = {t.name for t in graph.initializer}
    dequantized = {
        o for n in graph.node if n.op_type == "DequantizeLinear"
        if not weights_only or n.input[0] in constants for o in n.output
    }  # fmt: skip
    return {n.name: n.op_type for n in graph.node if dequantized & set(n.input)}


def activation_products(path: Path) -> set[str]:
    """Names of the MatMuls of two activations (q·kᵀ, attn·v) in a float model."""
    graph = onnx.load(str(path)).graph
    weights = {t.name for t in graph.initializer}
    return {
        n.name for n in graph.node
        if n.op_type == "MatMul" and not any(i in weights for i in n.input)
    }  # fmt: skip


def test_onnx_static_has_int8_weights_float_attention_and_keeps_accuracy(digits, fp32, tmp_path):
    loader = DataLoader(TensorDataset(digits[0][:256], digits[1][:256]), batch_size=32)
    path = quantize_onnx_static(fp32[0], tmp_path / "static.onnx", loader)
    ops = op_counts(path)
    assert ops["QuantizeLinear"] > 0 and ops["DequantizeLinear"] > 0
    assert len(int8_initializers(path)) >= weight_matmuls(fp32[0]) > 0
    int8_weights = dequantized_inputs(path, weights_only=True)
    assert set(int8_weights.values()) == {"MatMul", "Gemm", "Conv"}
    assert len(int8_weights) == weight_matmuls(fp32[0]) + op_counts(fp32[0])["Conv"]
    products = activation_products(fp32[0])  # q·kᵀ, attn·v (and the softmax between) stay float
    assert products and not products & set(dequantized_inputs(path))
    assert "Softmax" not in dequantized_inputs(path).values()
    check_accuracy(run_onnx(path, digits[2]), fp32[1], digits[3])
    every = quantize_onnx_static(fp32[0], tmp_path / "all.onnx", loader, attention_products=True)
    assert products <= set(dequantized_inputs(every))


def test_static_calibration_from_arrays(digits, fp32, tmp_path):
    """One (N, C, H, W) array is cut into batches; the result runs at another batch size."""
    images = digits[0][:64].numpy()
    assert [len(b) for b in calibration_batches(images, batch_size=24)] == [24, 24, 16]
    path = quantize_onnx_static(fp32[0], tmp_path / "static.onnx", images, per_channel=False)
    assert run_onnx(path, digits[2][:3]).shape == (3, 10)


@pytest.mark.parametrize("name", lightattn.list_attention())
def test_every_mechanism_runs_with_int8_linears(name):
    torch.manual_seed(0)
    module = lightattn.create_attention(name, 16, num_heads=2).eval()
    if name == "castling":
        module.set_aux_weight(0.0)
        lightattn.switch_to_inference(module)
    if name == "position":  # gamma starts at 0: the output would be the input alone
        nn.init.ones_(module.gamma)
    quantized = quantize_dynamic_torch(module)
    assert any(isinstance(m, DynamicLinear) for m in quantized.modules())
    assert not any(type(m) is nn.Linear for m in quantized.modules())
    image, tokens = torch.randn(2, 16, 9, 11), torch.randn(2, 99, 16)
    with torch.no_grad():
        for got, want in ((quantized(image), module(image)),
                          (quantized(tokens, (9, 11)), module(tokens, (9, 11)))):  # fmt: skip
            assert got.shape == want.shape
            assert ((got - want).norm() / want.norm()).item() < REL_ERR


def test_bad_inputs(tmp_path, fp32):
    with pytest.raises(ValueError, match="no such ONNX file"):
        quantize_onnx_dynamic(tmp_path / "missing.onnx", tmp_path / "out.onnx")
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="not an ONNX model"):
        quantize_onnx_dynamic(garbage, tmp_path / "out.onnx")
    with pytest.raises(ValueError, match="is the source file"):
        quantize_onnx_dynamic(fp32[0], fp32[0])
    no_images = torch.zeros(0, 1, 16, 16)
    for empty in ([], no_images.numpy(), DataLoader(TensorDataset(no_images))):
        with pytest.raises(ValueError, match="calibration"):
            quantize_onnx_static(fp32[0], tmp_path / "out.onnx", empty)
    with pytest.raises(ValueError, match="calibration"):
        quantize_onnx_static(fp32[0], tmp_path / "out.onnx", [np.zeros((4, 16), np.float32)])
    with pytest.raises(ValueError, match="op_types"):
        quantize_onnx_static(fp32[0], tmp_path / "out.onnx", np.zeros((2, 1, 16, 16)), op_types=[])
    with pytest.raises(ValueError, match="no nn.Linear"):
        quantize_dynamic_torch(nn.Conv2d(1, 1, 1))
    with pytest.raises(ValueError, match="nn.Module"):
        quantize_dynamic_torch("model")
    assert not (tmp_path / "out.onnx").exists()
