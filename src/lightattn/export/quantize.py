"""Int8 quantization of a model: torch's dynamic quantization of the eager nn.Linear layers,
and onnxruntime's dynamic (int8 weights) and static (QDQ, calibrated activations)
quantization of an exported ONNX file.

Choices, measured on this machine's AVX2 CPU without VNNI (docs/export/int8.md):

* ORT dynamic: MatMul and Gemm only (Conv would become ConvInteger, which ORT runs slower
  than the float Conv), per-tensor int8 weights, full 8-bit range.
* ORT static: QDQ with uint8 activations and int8 weights, per-channel and reduce_range
  (7-bit weights: no saturation in the u8·s8 pair sums without VNNI); only Conv, MatMul
  and Gemm are quantized. Softmax, LayerNormalization, GELU and the residual Adds stay
  float: their int8 kernels do not run faster and quantizing them costs accuracy.
"""

from __future__ import annotations

import copy
import tempfile
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

DYNAMIC_OPS = ("MatMul", "Gemm")
STATIC_OPS = ("Conv", "MatMul", "Gemm")


def quantize_dynamic_torch(model: nn.Module) -> nn.Module:
    """An eval-mode copy of `model` whose nn.Linear layers are int8 dynamically quantized
    (qint8 weights, activations quantized per call); input and output shapes are unchanged.
    ValueError if `model` is not an nn.Module or has no nn.Linear."""
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be an nn.Module, got {type(model).__name__}")
    if not any(type(m) is nn.Linear for m in model.modules()):
        raise ValueError(f"model {type(model).__name__} has no nn.Linear to quantize")
    from torch.ao.quantization import quantize_dynamic

    copied = copy.deepcopy(model).eval()
    with warnings.catch_warnings():  # torch.ao.quantization announces its move to torchao
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*")
        return quantize_dynamic(copied, {nn.Linear}, dtype=torch.qint8)


def onnx_file(path: str | Path, name: str = "src") -> Path:
    """`path` as a Path; ValueError naming `name` if it is not an existing ONNX file."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{name}={str(path)!r}: no such ONNX file")
    import onnx

    try:
        onnx.load(str(path), load_external_data=False)
    except Exception as err:  # onnx raises DecodeError and others on non-ONNX bytes
        raise ValueError(f"{name}={str(path)!r} is not an ONNX model: {err}") from err
    return path


def output_file(src: Path, dst: str | Path) -> Path:
    dst = Path(dst)
    if dst.resolve() == src.resolve():
        raise ValueError(f"dst={str(dst)!r} is the source file; write the int8 model elsewhere")
    dst.parent.mkdir(parents=True, exist_ok=True)
    return dst


def quantize_onnx_dynamic(src: str | Path, dst: str | Path) -> Path:
    """Write `dst`: the ONNX model `src` with the weights of its MatMul and Gemm nodes in
    int8 (activations quantized at run time: DynamicQuantizeLinear + MatMulInteger).
    Same inputs and outputs as `src`. Returns `dst`; ValueError if `src` is not an ONNX file."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    src = onnx_file(src)
    dst = output_file(src, dst)
    quantize_dynamic(
        src, dst, op_types_to_quantize=list(DYNAMIC_OPS), per_channel=False,
        reduce_range=False, weight_type=QuantType.QInt8,
    )  # fmt: skip
    return dst


def as_array(batch: Any) -> np.ndarray:
    """A calibration batch -> float32 (B, C, H, W) array; (images, labels) pairs give images."""
    if isinstance(batch, (tuple, list)):
        if not batch:
            raise ValueError("calibration: an empty (images, labels) item")
        batch = batch[0]
    if isinstance(batch, torch.Tensor):
        batch = batch.detach().cpu().numpy()
    array = np.asarray(batch, dtype=np.float32)
    if array.ndim != 4 or array.shape[0] == 0:
        raise ValueError(f"calibration: batches must be (B, C, H, W), B >= 1; got {array.shape}")
    return np.ascontiguousarray(array)


def calibration_batches(
    calibration: Any, max_batches: int | None = None, batch_size: int = 32
) -> list[np.ndarray]:
    """Float32 (B, C, H, W) batches from one array or tensor of images (cut into
    `batch_size` chunks) or an iterable of batches (arrays, tensors or (images, labels) as a
    DataLoader yields them), at most `max_batches`. ValueError if there are none."""
    if isinstance(calibration, (np.ndarray, torch.Tensor)):
        if len(calibration) == 0:
            raise ValueError("calibration: no images (empty array)")
        images = as_array(calibration)
        starts = range(0, len(images), batch_size)
        source: Iterable[Any] = [images[i : i + batch_size] for i in starts]
    elif isinstance(calibration, Iterable):
        source = calibration
    else:
        raise ValueError(
            f"calibration must be an array, a tensor or an iterable of batches, "
            f"got {type(calibration).__name__}"
        )
    batches = []
    for batch in source:
        if max_batches is not None and len(batches) >= max_batches:
            break
        batches.append(as_array(batch))
    if not batches:
        raise ValueError("calibration: no batches (empty array or data loader)")
    return batches


def _reader(input_name: str, batches: list[np.ndarray]):
    from onnxruntime.quantization import CalibrationDataReader

    class BatchReader(CalibrationDataReader):
        """Feeds each calibration batch once as {input_name: batch}."""

        def __init__(self) -> None:
            self.rewind()

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.items, None)

        def rewind(self) -> None:
            self.items: Iterator[dict[str, np.ndarray]] = iter([{input_name: b} for b in batches])

    return BatchReader()


def quantize_onnx_static(
    src: str | Path,
    dst: str | Path,
    calibration: Any,
    *,
    max_batches: int | None = 16,
    op_types: Iterable[str] = STATIC_OPS,
    attention_products: bool = False,
    per_channel: bool = True,
    reduce_range: bool = True,
) -> Path:
    """Write `dst`: `src` statically quantized to int8 in QDQ format (uint8 activations with
    MinMax ranges from `calibration`, int8 weights) on the nodes of `op_types`; the rest
    stays float. MatMuls of two activations (q·kᵀ, attn·v) stay float unless
    `attention_products`, and so does the Softmax between them. `calibration`: images as one
    (N, C, H, W) array/tensor or an iterable of batches (a DataLoader of (images, labels)
    works), at most `max_batches` used. Returns `dst`. ValueError for a missing `src`, empty
    calibration data or empty `op_types`."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    src = onnx_file(src)
    dst = output_file(src, dst)
    batches = calibration_batches(calibration, max_batches)
    op_types = list(op_types)
    if not op_types:
        raise ValueError("op_types=[]: name at least one ONNX op type to quantize")
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True)
        model = onnx.load(str(prepared))
        name_nodes(model.graph)
        onnx.save(model, str(prepared))
        exclude = [] if attention_products else activation_matmuls(model.graph)
        quantize_static(
            prepared, dst, _reader(graph_input(model.graph), batches),
            quant_format=QuantFormat.QDQ, op_types_to_quantize=op_types,
            nodes_to_exclude=exclude, per_channel=per_channel, reduce_range=reduce_range,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )  # fmt: skip
    return dst


def name_nodes(graph) -> None:
    """Give every unnamed node of an onnx GraphProto a unique name (exclusion is by name)."""
    taken = {n.name for n in graph.node}
    for i, node in enumerate(graph.node):
        if not node.name:
            node.name = f"{node.op_type}_unnamed_{i}"
            while node.name in taken:
                node.name += "_"
            taken.add(node.name)


def activation_matmuls(graph) -> list[str]:
    """Names of the MatMul nodes of an onnx GraphProto with no constant input."""
    constants = {t.name for t in graph.initializer}
    constants |= {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    return [
        n.name for n in graph.node
        if n.op_type == "MatMul" and not any(i in constants for i in n.input)
    ]  # fmt: skip


def graph_input(graph) -> str:
    """The name of the one non-initializer input of an onnx GraphProto."""
    initializers = {t.name for t in graph.initializer}
    inputs = [i.name for i in graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise ValueError(f"src: expected one image input, found {inputs}")
    return inputs[0]


def export_classifier(model: nn.Module, example: torch.Tensor, path: str | Path) -> Path:
    """Write `model` (eval mode) as ONNX at `path` with a dynamic batch and the fixed H, W of
    the (B, C, H, W) `example`; input "input", output "output". For whole models trained at
    one size: `lightattn.export.onnx.export_onnx` makes batch, H and W all dynamic or none,
    and a Swin-style backbone only takes H, W in multiples of patch x window."""
    from torch.export import Dim

    if not isinstance(example, torch.Tensor) or example.dim() != 4:
        raise ValueError(f"example must be a (B, C, H, W) tensor, got {type(example).__name__}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = copy.deepcopy(model).eval()
    with warnings.catch_warnings(), _quiet_logs():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model, (example,), dynamo=True, opset_version=18, input_names=["input"],
            output_names=["output"], dynamic_shapes=({0: Dim("batch", min=1, max=4096)},),
            verbose=False,
        )  # fmt: skip
        program.save(str(path))
    return path


class _quiet_logs:
    """Raise the exporters' loggers to ERROR inside a `with` block."""

    names = ("torch.onnx", "torch.export", "torch._export", "torch.fx", "torch._dynamo")

    def __enter__(self) -> None:
        import logging

        self.levels = {n: logging.getLogger(n).level for n in self.names}
        for name in self.names:
            logging.getLogger(name).setLevel(logging.ERROR)

    def __exit__(self, *exc: object) -> None:
        import logging

        for name, level in self.levels.items():
            logging.getLogger(name).setLevel(level)
