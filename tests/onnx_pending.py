"""Mechanisms whose ONNX export (dynamic batch, H, W) is still being rewritten: ONNX tests
mark these xfail(strict=True), so each must leave this set the moment it passes."""

PENDING: set[str] = set()
