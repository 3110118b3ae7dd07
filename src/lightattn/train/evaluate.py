"""`lightattn eval`: a checkpoint's accuracy, confusion matrix and img/s on a data split;
for Castling models, the accuracy before and after the switch to inference."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..layers.castling import CastlingAttention, apply_aux_schedule, switch_to_inference
from .checkpoint import read_weights
from .config import TrainConfig
from .loop import build_model, load_data


def load_checkpoint(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model a `lightattn train` checkpoint was saved from and load it strictly.
    ValueError if the file is not such a checkpoint or does not fit its own model."""
    state, meta = read_weights(path)
    cfg = TrainConfig.from_dict({**meta["config"], "progress": False})
    model = build_model(cfg, meta["num_classes"], meta["in_chans"])
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(
            f"checkpoint {str(path)!r} does not fit model {cfg.model!r}: {err}"
        ) from err
    return model.eval(), meta


@torch.no_grad()
def predictions(
    model: nn.Module, data: Dataset, batch_size: int
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(predicted labels, true labels, images per second of the forward passes)."""
    preds, labels, seconds = [], [], 0.0
    for images, target in DataLoader(data, batch_size=batch_size):
        started = time.perf_counter()
        logits = model(images)
        seconds += time.perf_counter() - started
        preds.append(logits.argmax(1))
        labels.append(target)
    pred, true = torch.cat(preds), torch.cat(labels)
    return pred, true, len(true) / seconds if seconds > 0 else 0.0


def confusion(pred: torch.Tensor, true: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(num_classes, num_classes) counts, rows = true class, columns = predicted."""
    index = true * num_classes + pred
    return torch.bincount(index, minlength=num_classes**2).view(num_classes, num_classes)


def plot_confusion(matrix: torch.Tensor, names: list[str], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(names)
    fig, ax = plt.subplots(figsize=(2 + 0.45 * n, 1.6 + 0.45 * n))
    ax.imshow(matrix.numpy(), cmap="Blues")
    ax.set_xticks(range(n), names, rotation=90 if n > 4 else 0)
    ax.set_yticks(range(n), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    if n <= 20:
        for (i, j), v in zip(
            torch.cartesian_prod(torch.arange(n), torch.arange(n)).tolist(),
            matrix.flatten().tolist(),
            strict=True,
        ):
            ax.text(j, i, str(v), ha="center", va="center", fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def castling_layers(model: nn.Module) -> list[CastlingAttention]:
    return [m for m in model.modules() if isinstance(m, CastlingAttention) and m.has_aux]


def with_aux_branch(model: nn.Module) -> nn.Module:
    """A copy that runs every Castling layer's auxiliary softmax branch, at its saved weight,
    in eval mode too: the network as it was trained, before the switch."""
    copied = copy.deepcopy(model)
    for layer in castling_layers(copied):
        layer.aux_in_eval = True
    return copied


def switched_copy(model: nn.Module) -> nn.Module:
    """A copy with every Castling layer switched to inference (aux branch dropped)."""
    switched = copy.deepcopy(model)
    apply_aux_schedule(switched, 1, 1)  # weight 0
    return switch_to_inference(switched)


def evaluate_checkpoint(
    path: str | Path,
    data: str | None = None,
    split: str = "test",
    out: str | Path | None = None,
    batch_size: int = 256,
) -> dict[str, Any]:
    """Accuracy, per-class confusion matrix (PNG under `out`) and img/s of a checkpoint on
    `split` of `data` (default: the data set it was trained on)."""
    model, meta = load_checkpoint(path)
    cfg = TrainConfig.from_dict({**meta["config"], "progress": False})
    if data is not None:
        cfg.data = data
    bundle = load_data(cfg)
    if bundle.num_classes != meta["num_classes"] or bundle.in_chans != meta["in_chans"]:
        raise ValueError(
            f"data {cfg.data!r} has {bundle.num_classes} classes and {bundle.in_chans} "
            f"channels; checkpoint {str(path)!r} was trained for {meta['num_classes']} and "
            f"{meta['in_chans']}"
        )
    dataset = bundle[split]
    pred, true, rate = predictions(model, dataset, batch_size)
    result: dict[str, Any] = {
        "checkpoint": str(path), "data": cfg.data, "split": split, "n": len(true),
        "acc": float((pred == true).float().mean()), "img_per_s": rate,
    }  # fmt: skip
    layers = castling_layers(model)
    if layers:
        pred_a, _, rate_a = predictions(with_aux_branch(model), dataset, batch_size)
        pred_s, _, rate_s = predictions(switched_copy(model), dataset, batch_size)
        result["castling"] = {
            "aux_weight": layers[0].aux_weight,
            "acc_before_switch": float((pred_a == true).float().mean()),
            "acc_after_switch": float((pred_s == true).float().mean()),
            "img_per_s_before_switch": rate_a,
            "img_per_s_after_switch": rate_s,
        }
    matrix = confusion(pred, true, bundle.num_classes)
    result["confusion"] = matrix.tolist()
    if out is not None:
        out = Path(out)
        title = f"{Path(path).name} on {cfg.data} ({split}): acc {result['acc']:.4f}"
        plot_confusion(matrix, bundle.class_names, out / "confusion.png", title)
        (out / "eval.json").write_text(json.dumps(result, indent=2))
    return result
