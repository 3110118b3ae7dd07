"""A training run's settings, as one JSON-serialisable dataclass."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

AMP_CHOICES = ("none", "bf16", "fp16")


@dataclass
class TrainConfig:
    """Everything that determines a run (written to `<out>/config.json`).

    `model` is a named model or a family (`lightattn.list_models()` / `list_families()`),
    built with `model_kwargs`; `attn` (with `attn_kwargs`) swaps every attention stage.
    `epochs` of AdamW at `lr` (scaled by nothing: it is the rate for `batch_size`, the
    global batch), linear warm-up over `warmup_epochs`, cosine decay to `min_lr`.
    """

    data: str
    out: str
    model: str = "swin"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    attn: str | None = None
    attn_kwargs: dict[str, Any] = field(default_factory=dict)
    img_size: int | None = None
    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    min_lr: float = 1e-5
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1
    clip_grad: float | None = 1.0
    drop_path: float = 0.1
    amp: str = "none"
    seed: int = 0
    eval_batch_size: int | None = None
    checkpoint_every: int = 0  # steps; 0: at the end of every epoch only
    max_steps: int | None = None  # stop (and checkpoint) after this many optimizer steps
    tensorboard: bool = False
    threads: int | None = None
    castling_schedule: dict[str, float] = field(default_factory=dict)
    progress: bool = True
    augment: bool | None = None  # None: the data set's default (none for pathfinder)
    data_seed: int = 0  # fixes the cut splits and the generated data sets
    pathfinder_counts: dict[str, int] | None = None  # images per split (default 20k/2k/2k)
    data_cache: str | None = None  # where generated data sets are cached
    device: str = "auto"  # auto: cuda when available (one GPU per process under torchrun)

    def __post_init__(self) -> None:
        check_config(self)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown training setting(s) {unknown}")
        return cls(**values)

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))


def check_config(c: TrainConfig) -> None:
    """ValueError naming the first bad setting."""
    positive = {"epochs": c.epochs, "batch_size": c.batch_size}
    for name, value in positive.items():
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}={value!r} must be an integer >= 1")
    if c.img_size is not None and (not isinstance(c.img_size, int) or c.img_size < 1):
        raise ValueError(f"img_size={c.img_size!r} must be an integer >= 1")
    for name in ("lr", "min_lr", "weight_decay", "warmup_epochs", "drop_path"):
        value = getattr(c, name)
        if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ValueError(f"{name}={value!r} must be a finite number >= 0")
    if not 0 <= c.label_smoothing < 1:
        raise ValueError(f"label_smoothing={c.label_smoothing!r} must be in [0, 1)")
    if c.clip_grad is not None and not c.clip_grad > 0:
        raise ValueError(f"clip_grad={c.clip_grad!r} must be > 0 (or None: no clipping)")
    if c.amp not in AMP_CHOICES:
        raise ValueError(f"amp={c.amp!r} must be one of {', '.join(AMP_CHOICES)}")
    if c.checkpoint_every < 0:
        raise ValueError(f"checkpoint_every={c.checkpoint_every!r} must be >= 0")
    if c.max_steps is not None and c.max_steps < 1:
        raise ValueError(f"max_steps={c.max_steps!r} must be >= 1")


def parse_value(text: str) -> Any:
    """'3' -> 3, '0.5' -> 0.5, 'true' -> True, 'none' -> None, anything else a string."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text.strip()


def parse_kwargs(text: str | None) -> dict[str, Any]:
    """'embed_dim=32,depths=2,2,2,2,window_size=7' -> {'embed_dim': 32, 'depths': (2, 2, 2,
    2), 'window_size': 7}: a piece without '=' extends the previous value into a tuple."""
    result: dict[str, Any] = {}
    if not text:
        return result
    key = None
    for piece in text.split(","):
        if "=" in piece:
            key, value = piece.split("=", 1)
            key = key.strip()
            if not key.isidentifier():
                raise ValueError(f"bad key {key!r} in {text!r} (expected key=value,...)")
            result[key] = parse_value(value)
        elif key is None:
            raise ValueError(f"{text!r} must start with key=value")
        else:
            previous = result[key]
            items = previous if isinstance(previous, tuple) else (previous,)
            result[key] = (*items, parse_value(piece))
    return result
