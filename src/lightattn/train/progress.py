"""A rich progress bar over optimizer steps: loss, accuracy, img/s and ETA."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.progress import Progress as RichProgress


class Progress:
    """`with Progress(enabled, total, done) as bar: bar.update(step, loss=..., ...)`.
    Disabled (other ranks, --no-progress, tests) it does nothing."""

    def __init__(self, enabled: bool, total: int, done: int = 0) -> None:
        self.enabled, self.total, self.done = enabled, total, done
        self._bar: RichProgress | None = None
        self._task = None

    def __enter__(self) -> Progress:
        if self.enabled:
            self._bar = RichProgress(
                TextColumn("epoch {task.fields[epoch]}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]:.4f}  acc {task.fields[acc]:.3f}"),
                TextColumn("{task.fields[rate]:.1f} img/s"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=False,
            )
            self._bar.__enter__()
            fields = {"epoch": 0, "loss": float("nan"), "acc": 0.0, "rate": 0.0}
            self._task = self._bar.add_task(
                "train", total=self.total, completed=self.done, **fields
            )
        return self

    def update(self, step: int, **fields: Any) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=step, **fields)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)
