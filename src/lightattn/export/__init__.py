"""Deployment: ONNX export with dynamic batch, H and W, checked in onnxruntime
(`lightattn.export.onnx`), and int8 quantization (`lightattn.export.quantize`)."""

from .onnx import (
    MAX_OPSET,
    MIN_OPSET,
    ExportError,
    check_opset,
    export_onnx,
    ort_session,
    run_ort,
    verify_onnx,
)

__all__ = [
    "MAX_OPSET",
    "MIN_OPSET",
    "ExportError",
    "check_opset",
    "export_onnx",
    "ort_session",
    "run_ort",
    "verify_onnx",
]
