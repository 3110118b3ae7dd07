"""Tamper-model checkpoints: safetensors weights whose header holds the arguments of
`create_tamper_model`, so a file alone rebuilds its network."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn

from ..train.checkpoint import open_checkpoint, save_weights
from .network import create_tamper_model

HEADER = "lightattn"  # the key `train.checkpoint.save_weights` stores the metadata under


def save_tamper_model(
    model: nn.Module, path: str | Path, model_kwargs: dict[str, Any], extra: dict | None = None
) -> None:
    """Write `model`'s weights to `path` (atomically) with `model_kwargs` (the arguments of
    `create_tamper_model` that built it) and any JSON-able `extra` (training config, metrics)."""
    meta = {"kind": "tamper", "model": model_kwargs, **(extra or {})}
    save_weights(model, Path(path), meta)


def read_tamper_meta(path: str | Path) -> dict[str, Any]:
    """The metadata of a tamper checkpoint; ValueError naming the file otherwise."""
    header, _ = open_checkpoint(path, tensors=False)
    meta = json.loads(header.get(HEADER, "{}"))
    if meta.get("kind") != "tamper":
        raise ValueError(f"checkpoint {str(path)!r} is not a lightattn tamper checkpoint")
    return meta


def load_tamper_model(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """-> (the network in eval mode with the checkpoint's weights, its metadata)."""
    from ..train.checkpoint import read_weights

    meta = read_tamper_meta(path)
    state, _ = read_weights(path)
    model = create_tamper_model(**meta["model"])
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"checkpoint {str(path)!r} does not fit its network: {err}") from err
    return model.eval(), meta
