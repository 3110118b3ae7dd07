"""Checkpoints that survive a kill at any moment.

A checkpoint is a pair: `step-<n>.safetensors` (the model's weights, with the model's
settings and any non-tensor module state in the metadata) and `step-<n>.state.pt`
(optimizer, scheduler, RNG states, counters). Each file is written to a temporary name and
renamed; only then does `last.json` (also renamed into place) point at the pair, and older
pairs are removed. A run killed before the rename of `last.json` resumes from the previous
pair, which is still complete.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

EXTRA_STATE = "_extra_state"
POINTER = "last.json"


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call `write(tmp)` for a temporary file beside `path`, fsync it, rename onto `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def split_state(model: nn.Module) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """state_dict -> (contiguous CPU tensors, JSON-able non-tensor entries such as castling's
    extra state)."""
    tensors, extra = {}, {}
    for key, value in model.state_dict().items():
        if isinstance(value, Tensor):
            tensors[key] = value.detach().to("cpu").contiguous().clone()
        else:
            extra[key] = value
    return tensors, extra


def save_weights(model: nn.Module, path: Path, metadata: dict[str, Any]) -> None:
    """Weights as safetensors; `metadata` (JSON-able) and the non-tensor state go in its
    header under "lightattn" and "extra_state"."""
    tensors, extra = split_state(model)
    header = {"lightattn": json.dumps(metadata), "extra_state": json.dumps(extra)}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=header))


def open_checkpoint(path: str | Path, tensors: bool = True) -> tuple[dict[str, str], dict]:
    """-> (the safetensors header metadata, the tensors (empty unless `tensors`)).
    ValueError naming the file if it is missing or not a safetensors file."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"checkpoint {str(path)!r} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
            state = {key: f.get_tensor(key) for key in f.keys()} if tensors else {}  # noqa: SIM118
    except Exception as err:  # safetensors raises its own error types
        raise ValueError(f"checkpoint {str(path)!r} is not a safetensors file: {err}") from err
    return header, state


def read_weights(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """-> (state_dict incl. non-tensor entries, metadata). ValueError for a file that is not
    a lightattn checkpoint."""
    header, state = open_checkpoint(path)
    if "lightattn" not in header:
        raise ValueError(f"checkpoint {str(path)!r} was not written by lightattn train")
    state.update(json.loads(header.get("extra_state", "{}")))
    return state, json.loads(header["lightattn"])


def save_checkpoint(out: Path, model: nn.Module, state: dict[str, Any], meta: dict) -> Path:
    """Write the pair for `state["step"]`, point `last.json` at it, drop older pairs."""
    step = int(state["step"])
    weights, extra = out / f"step-{step}.safetensors", out / f"step-{step}.state.pt"
    save_weights(model, weights, meta)
    atomic_write(extra, lambda tmp: torch.save(state, tmp))
    pointer = {"step": step, "weights": weights.name, "state": extra.name}
    atomic_write(out / POINTER, lambda tmp: tmp.write_text(json.dumps(pointer)))
    for old in out.glob("step-*"):
        if old.name not in (weights.name, extra.name):
            old.unlink(missing_ok=True)
    return weights


def latest_checkpoint(out: Path) -> tuple[Path, Path] | None:
    """(weights, state) of the last complete checkpoint in `out`, or None."""
    pointer = out / POINTER
    if not pointer.is_file():
        return None
    entry = json.loads(pointer.read_text())
    weights, state = out / entry["weights"], out / entry["state"]
    if not (weights.is_file() and state.is_file()):
        return None
    return weights, state


def load_state(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=False)
