"""Int8 quantization of a model: torch's dynamic quantization of the eager nn.Linear layers,
and onnxruntime's dynamic (int8 weights) and static (QDQ, calibrated activations)
quantization of an exported ONNX file.

Settings, measured on this machine's AVX2 CPU without VNNI (docs/export/int8.md):

* Weights int8 per output channel in 7 bits (reduce_range) for both ORT modes: with uint8
  activations, AVX2 sums u8·s8 products in pairs into int16, which saturates for weights
  over the full 8-bit range (a 256->64 layer with uniform weights: 9% error, 0.8% here).
* ORT dynamic: MatMul and Gemm only; Conv (the patch embedding) would become ConvInteger:
  no faster, less accurate.
* ORT static: QDQ, uint8 activations from MinMax calibration, on Conv, MatMul and Gemm with
  float outputs (ORT runs MatMulIntegerToFloat). Softmax, LayerNormalization, GELU, the
  residual Adds and the q·kᵀ / attn·v products stay float: quantizing them, or requantizing
  the outputs, was slower and less accurate.
"""

from __future__ import annotations

import copy
import csv
import json
import sys
import tempfile
import time
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


def quantize_onnx_dynamic(
    src: str | Path, dst: str | Path, *, per_channel: bool = True, reduce_range: bool = True
) -> Path:
    """Write `dst`: the ONNX model `src` with the weights of its MatMul and Gemm nodes in
    int8 (activations quantized at run time: DynamicQuantizeLinear + MatMulInteger), per
    output channel and in 7 bits unless told otherwise (see the module docstring). Same
    inputs and outputs as `src`. Returns `dst`; ValueError if `src` is not an ONNX file."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    src = onnx_file(src)
    dst = output_file(src, dst)
    quantize_dynamic(
        src, dst, op_types_to_quantize=list(DYNAMIC_OPS), per_channel=per_channel,
        reduce_range=reduce_range, weight_type=QuantType.QInt8,
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
        if tuple(calibration.shape[:1]) == (0,):
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
    quantize_outputs: bool = False,
    per_channel: bool = True,
    reduce_range: bool = True,
) -> Path:
    """Write `dst`: `src` statically quantized to int8 in QDQ format (uint8 activations with
    MinMax ranges from `calibration`, int8 weights) on the nodes of `op_types`; the rest
    stays float. Their outputs stay float unless `quantize_outputs` (ORT then runs
    MatMulIntegerToFloat: no requantization before the float LayerNorm/GELU/Add that
    follow). MatMuls of two activations (q·kᵀ, attn·v) stay float unless
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
        extra = {} if quantize_outputs else {"OpTypesToExcludeOutputQuantization": op_types}
        quantize_static(
            prepared, dst, _reader(graph_input(model.graph), batches),
            quant_format=QuantFormat.QDQ, op_types_to_quantize=op_types,
            nodes_to_exclude=exclude, per_channel=per_channel, reduce_range=reduce_range,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax, extra_options=extra,
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
    the (B, C, H, W) `example`; input "input", output "output". For classifiers run at
    their training size: `lightattn.export.onnx.export_onnx` makes batch, H and W all
    dynamic (H, W >= 33 for a network) or all fixed."""
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


# --- the int8 report: accuracy and interleaved latency of a trained checkpoint -------------

# ORT settings measured beside the chosen ones (name -> dynamic or static keyword arguments)
ALTERNATIVES: dict[str, tuple[str, dict[str, Any]]] = {
    "ORT int8 dynamic, per-tensor, 8-bit weights": (
        "dynamic", {"per_channel": False, "reduce_range": False}),
    "ORT int8 dynamic, + Conv (ConvInteger)": (
        "dynamic", {"op_types_to_quantize": ["MatMul", "Gemm", "Conv"]}),
    "ORT int8 static, per-tensor": ("static", {"per_channel": False, "reduce_range": False}),
    "ORT int8 static, per-channel, no reduce_range": ("static", {"reduce_range": False}),
    "ORT int8 static, + attention products": ("static", {"attention_products": True}),
    "ORT int8 static, outputs quantized (QLinearMatMul)": ("static", {"quantize_outputs": True}),
}  # fmt: skip


def images_of(dataset, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `limit` items of a (image, label) dataset stacked: (N, C, H, W), (N,)."""
    n = len(dataset) if limit is None else min(limit, len(dataset))
    items = [dataset[i] for i in range(n)]
    return torch.stack([x for x, _ in items]), torch.tensor([int(y) for _, y in items])


def logits_of(run, images: torch.Tensor, batch: int = 32) -> np.ndarray:
    with torch.no_grad():
        parts = [np.asarray(run(images[i : i + batch])) for i in range(0, len(images), batch)]
    return np.concatenate(parts)


def interleaved_ms(runs: dict[Any, Any], x: torch.Tensor, rounds: int) -> dict[Any, list[float]]:
    """Per-call ms of every run on `x`, one call of each per round (order rotated), so that
    a busy machine slows them alike."""
    names = list(runs)
    times: dict[Any, list[float]] = {n: [] for n in names}
    with torch.no_grad():
        for name in names:
            for _ in range(3):
                runs[name](x)
        for r in range(rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                started = time.perf_counter()
                runs[name](x)
                times[name].append(1e3 * (time.perf_counter() - started))
    return times


def int8_report(
    checkpoint: str | Path,
    out: str | Path,
    *,
    calibration: int = 256,
    rounds: int = 200,
    instances: int = 3,
    alternatives: bool = True,
) -> dict[str, Any]:
    """Test accuracy, agreement with fp32 and batch-1 / batch-32 latency (1 thread,
    interleaved) of a `lightattn train` checkpoint as eager fp32, eager int8 dynamic, ORT
    fp32, ORT int8 dynamic and ORT int8 static (calibrated on the first `calibration`
    training images, unaugmented). Latency: the median of `rounds` calls at batch 1
    (rounds / 10 at batch 32) of the fastest of `instances` copies of each variant, all
    interleaved. Writes int8.json and int8.csv (and the ONNX files under onnx/) in `out`."""
    from ..train.data import build_dataset
    from ..train.evaluate import load_checkpoint
    from .onnx import ort_session

    torch.set_num_threads(1)
    model, meta = load_checkpoint(checkpoint)
    cfg = meta["config"]
    bundle = build_dataset(cfg["data"], cfg["img_size"], augment=False, seed=cfg["data_seed"])
    x_cal, _ = images_of(bundle["train"], calibration)
    x_test, y_test = images_of(bundle["test"])
    out = Path(out)
    onnx_dir = out / "onnx"
    fp32 = export_classifier(model, x_test[:2], onnx_dir / "fp32.onnx")
    files = {
        "ORT fp32": fp32,
        "ORT int8 dynamic": quantize_onnx_dynamic(fp32, onnx_dir / "dynamic.onnx"),
        "ORT int8 static": quantize_onnx_static(fp32, onnx_dir / "static.onnx", x_cal),
    }
    if alternatives:
        files.update(_alternatives(fp32, onnx_dir, x_cal))
    makers: dict[str, Any] = {
        "eager fp32": lambda: copy.deepcopy(model),
        "eager int8 dynamic": lambda: quantize_dynamic_torch(model),
    }
    for name, path in files.items():
        makers[name] = (lambda p: lambda: _ort_run(ort_session(p, threads=1)))(path)
    # instances of one model differ by up to 4x at batch 1 here (memory placement): time
    # several of each variant and keep the fastest
    runs = {(name, i): make() for name, make in makers.items() for i in range(instances)}
    reference = logits_of(runs["eager fp32", 0], x_test)
    rows = []
    for name in makers:
        logits = logits_of(runs[name, 0], x_test)
        rows.append({
            "variant": name, "test_acc": float((logits.argmax(1) == y_test.numpy()).mean()),
            "agree_fp32": float((logits.argmax(1) == reference.argmax(1)).mean()),
            "max_abs_logit_diff": float(np.abs(logits - reference).max()),
            "onnx_kb": files[name].stat().st_size / 1024 if name in files else None,
        })  # fmt: skip
    for batch in (1, 32):
        times = interleaved_ms(runs, x_test[:batch], rounds if batch == 1 else rounds // 10)
        medians = {key: float(np.median(t)) for key, t in times.items()}
        best = {n: min(medians[n, i] for i in range(instances)) for n in makers}
        for row in rows:
            name = row["variant"]
            row[f"ms_b{batch}"] = best[name]
            row[f"speedup_b{batch}"] = best["eager fp32"] / best[name]
            row[f"instances_ms_b{batch}"] = [medians[name, i] for i in range(instances)]
    result = {
        "checkpoint": str(checkpoint), "config": cfg, "test_images": len(y_test),
        "calibration_images": len(x_cal), "rounds_b1": rounds, "rounds_b32": rounds // 10,
        "instances": instances,
        "threads": 1, "torch": torch.__version__, "onnxruntime": _ort_version(), "rows": rows,
    }  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    (out / "int8.json").write_text(json.dumps(result, indent=2))
    with open(out / "int8.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return result


def _alternatives(fp32: Path, onnx_dir: Path, x_cal: torch.Tensor) -> dict[str, Path]:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    files = {}
    for i, (name, (kind, kwargs)) in enumerate(ALTERNATIVES.items()):
        path = onnx_dir / f"alternative-{i}.onnx"
        if kind == "dynamic":
            options = {"op_types_to_quantize": list(DYNAMIC_OPS), "per_channel": True,
                       "reduce_range": True, **kwargs}  # fmt: skip
            quantize_dynamic(fp32, path, weight_type=QuantType.QInt8, **options)
        else:
            quantize_onnx_static(fp32, path, x_cal, **kwargs)
        files[name] = path
    return files


def _ort_run(session: Any) -> Any:
    from .onnx import run_ort

    return lambda x: run_ort(session, x)[0]


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


def markdown_table(result: dict[str, Any]) -> str:
    """The report's rows as a markdown table."""
    lines = [
        "| variant | test acc | agrees with fp32 | max abs logit diff | batch 1 ms (x eager) "
        "| batch 32 ms/img (x eager) | ONNX KB |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        kb = f"{r['onnx_kb']:.0f}" if r["onnx_kb"] is not None else ""
        lines.append(
            f"| {r['variant']} | {100 * r['test_acc']:.1f} | {100 * r['agree_fp32']:.1f}% | "
            f"{r['max_abs_logit_diff']:.3f} | {r['ms_b1']:.2f} ({r['speedup_b1']:.2f}x) | "
            f"{r['ms_b32'] / 32:.3f} ({r['speedup_b32']:.2f}x) | {kb} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """python -m lightattn.export.quantize CHECKPOINT --out DIR: the int8 report."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m lightattn.export.quantize")
    parser.add_argument("checkpoint")
    parser.add_argument("--out", required=True)
    parser.add_argument("--calibration", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--instances", type=int, default=3)
    parser.add_argument("--no-alternatives", action="store_true")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    result = int8_report(
        args.checkpoint, args.out, calibration=args.calibration, rounds=args.rounds,
        instances=args.instances, alternatives=not args.no_alternatives,
    )  # fmt: skip
    print(markdown_table(result), end="")
    print(f"wall {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
