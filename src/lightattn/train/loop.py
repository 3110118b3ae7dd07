"""`train(config)`: AdamW + warm-up + cosine, label smoothing, clipping, mixed precision,
stochastic depth, the Castling schedule, DDP, atomic checkpoints and exact resume."""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, Dataset, DistributedSampler

from ..layers.castling import CastlingAttention, apply_aux_schedule
from ..models import create_model
from . import distributed
from .checkpoint import latest_checkpoint, load_state, read_weights, save_checkpoint, save_weights
from .config import TrainConfig
from .data import DataBundle, build_dataset
from .progress import Progress

WEIGHTS_BEST, WEIGHTS_FINAL = "best.safetensors", "final.safetensors"


@dataclass
class RunState:
    """Counters restored on resume."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    best_acc: float = -1.0
    history: list[dict[str, Any]] = field(default_factory=list)


def load_data(cfg: TrainConfig) -> DataBundle:
    return build_dataset(
        cfg.data, cfg.img_size, augment=cfg.augment, seed=cfg.data_seed,
        cache_dir=cfg.data_cache, pathfinder_counts=cfg.pathfinder_counts,
    )  # fmt: skip


def check_tensorboard() -> None:
    try:
        import tensorboard  # noqa: F401
    except ImportError as err:
        raise ValueError(
            "--tensorboard needs the tensorboard package: pip install 'lightattn[tensorboard]'"
        ) from err


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_model(cfg: TrainConfig, num_classes: int, in_chans: int) -> nn.Module:
    kwargs = dict(cfg.model_kwargs)
    kwargs.setdefault("num_classes", num_classes)
    kwargs.setdefault("in_chans", in_chans)
    kwargs.setdefault("drop_path_rate", cfg.drop_path)
    if cfg.attn is not None:
        kwargs["attn"] = cfg.attn
        if cfg.attn_kwargs:
            kwargs["attn_kwargs"] = cfg.attn_kwargs
    return create_model(cfg.model, **kwargs)


def check_input_size(model: nn.Module, in_chans: int, img_size: int) -> None:
    """One eval forward at the run's image size; ValueError if the model cannot take it."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, in_chans, img_size, img_size))
    except (RuntimeError, ValueError) as err:
        raise ValueError(f"img_size={img_size} cannot be taken by the model: {err}") from err
    finally:
        model.train(was_training)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """No weight decay on norms, biases, position tables and other 1-D parameters."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        table = "table" in name or "pos_embed" in name
        (no_decay if p.ndim <= 1 or table else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def lr_factor(step: int, warmup: int, total: int, floor: float) -> float:
    """Linear warm-up over `warmup` steps, then cosine from 1 to `floor`."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def autocast(cfg: TrainConfig, device: torch.device):
    if cfg.amp == "none":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if cfg.amp == "bf16" else torch.float16
    if device.type == "cpu" and dtype == torch.float16:
        raise ValueError("amp='fp16' needs CUDA; use amp='bf16' on CPU")
    return torch.autocast(device.type, dtype=dtype)


def has_castling(model: nn.Module) -> bool:
    return any(isinstance(m, CastlingAttention) and m.has_aux for m in model.modules())


def rng_state() -> dict[str, Any]:
    state = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def maybe_fail(step: int) -> None:
    """Test hook: LIGHTATTN_KILL_AT_STEP=n ends the process abruptly after step n, as a
    SIGKILL would (no checkpoint, no clean-up)."""
    if os.environ.get("LIGHTATTN_KILL_AT_STEP") == str(step):
        os._exit(137)


class ResumableRun:
    """What every training loop here shares: DDP wrapping, the optimizer step with grad
    scaling and clipping, atomic checkpoints and exact resume. Subclasses set `out`, `dist`,
    `model`, `optimizer`, `scheduler`, `scaler` and `state` (a dataclass with `step` and
    `history`), and give `_checkpoint_meta()`."""

    def _wrap(self) -> nn.Module:
        if not self.dist.enabled:
            return self.model
        ids = [self.dist.device.index] if self.dist.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(self.model, device_ids=ids)

    def _make_optimizer(self, cfg: Any, floor: float) -> None:
        """AdamW over `param_groups`, linear warm-up + cosine to `floor` x lr over
        `self.total_steps`, and the fp16-on-CUDA grad scaler. `cfg` has lr, weight_decay,
        warmup_epochs and amp; `self.steps_per_epoch` and `self.total_steps` are set."""
        self.optimizer = torch.optim.AdamW(param_groups(self.model, cfg.weight_decay), lr=cfg.lr)
        warmup = round(cfg.warmup_epochs * self.steps_per_epoch)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, warmup, self.total_steps, floor)
        )
        self.scaler = torch.amp.GradScaler(
            "cuda", enabled=cfg.amp == "fp16" and self.dist.device.type == "cuda"
        )

    def _optimizer_step(self, loss: torch.Tensor, clip: float | None) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if clip is not None:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()

    def _checkpoint_meta(self) -> dict[str, Any]:
        raise NotImplementedError

    def _checkpoint(self) -> None:
        rngs = gather_rng(self.dist)
        if not self.dist.main:
            return
        state = {
            "step": self.state.step,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rngs,
            "run": self.state.__dict__,
        }
        save_checkpoint(self.out, self.model, state, self._checkpoint_meta())

    def _restore(self) -> None:
        weights, extra = latest_checkpoint(self.out)
        state_dict, _ = read_weights(weights)
        self.model.load_state_dict(state_dict)
        saved = load_state(extra)
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        self.scaler.load_state_dict(saved["scaler"])
        self.state = type(self.state)(**saved["run"])
        if self.dist.main:  # rows written after this checkpoint are replayed: drop them
            for name in ("metrics.jsonl", "metrics.csv"):
                (self.out / name).unlink(missing_ok=True)
            for row in self.state.history:
                write_metrics(self.out, row, tensorboard=False)
        set_rng_state(saved["rng"][min(self.dist.rank, len(saved["rng"]) - 1)])


class Trainer(ResumableRun):
    """One run of `TrainConfig`; `run()` trains (or resumes) and returns the summary."""

    def __init__(self, cfg: TrainConfig, resume: bool = False) -> None:
        self.cfg, self.resume = cfg, resume
        self.out = Path(cfg.out)
        self.dist = distributed.setup(cfg.device)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self._check_out_dir()
        if cfg.tensorboard:
            check_tensorboard()
        seed_everything(cfg.seed)
        self.data: DataBundle = self._load_data()
        self.img_size = self.data.img_size
        self.model = build_model(cfg, self.data.num_classes, self.data.in_chans)
        check_input_size(self.model, self.data.in_chans, self.img_size)
        self.model.to(self.dist.device)
        self.world_batch = cfg.batch_size
        if self.world_batch % self.dist.world:
            raise ValueError(
                f"batch_size={cfg.batch_size} (global) is not divisible by the "
                f"{self.dist.world} processes"
            )
        self.local_batch = self.world_batch // self.dist.world
        self.steps_per_epoch = len(self.data.train) // self.world_batch
        if self.steps_per_epoch < 1:
            raise ValueError(
                f"batch_size={cfg.batch_size} is larger than the training set "
                f"({len(self.data.train)} images)"
            )
        self.total_steps = cfg.epochs * self.steps_per_epoch
        self._make_optimizer(cfg, floor=cfg.min_lr / cfg.lr if cfg.lr > 0 else 0.0)
        self.state = RunState()
        self.castling = has_castling(self.model)
        if resume:
            self._restore()
        self.net = self._wrap()

    # set-up ---------------------------------------------------------------------------
    def _check_out_dir(self) -> None:
        found = latest_checkpoint(self.out)
        if self.resume and found is None:
            raise ValueError(f"--resume: no checkpoint in {str(self.out)!r} (nothing to resume)")
        if self.resume:
            check_same_model(self.cfg, read_weights(found[0])[1], found[0])
        if not self.resume and found is not None:
            raise ValueError(
                f"out={str(self.out)!r} already holds a run; pass --resume to continue it or "
                "choose another --out (nothing was overwritten)"
            )

    def _load_data(self) -> DataBundle:
        """Rank 0 first (it generates and caches a built-in set), then the others read it."""
        if self.dist.main:
            data = load_data(self.cfg)
        distributed.barrier(self.dist)
        if not self.dist.main:
            data = load_data(self.cfg)
        return data

    def _sampler(self, epoch: int) -> DistributedSampler:
        sampler = DistributedSampler(
            self.data.train, num_replicas=self.dist.world, rank=self.dist.rank,
            shuffle=True, seed=self.cfg.seed, drop_last=True,
        )  # fmt: skip
        sampler.set_epoch(epoch)
        return sampler

    def _batches(self, epoch: int, skip: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        batches = BatchSampler(self._sampler(epoch), self.local_batch, drop_last=True)
        loader = DataLoader(
            self.data.train, batch_sampler=list(islice(batches, skip, None)),
            generator=torch.Generator(),  # not the global RNG: resume replays it exactly
        )  # fmt: skip
        return islice(iter(loader), self.steps_per_epoch - skip)

    # training -------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        cfg = self.cfg
        if self.dist.main:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "config.json").write_text(cfg.to_json())
        stop = cfg.max_steps or self.total_steps
        with Progress(enabled=cfg.progress and self.dist.main, total=min(stop, self.total_steps),
                      done=self.state.step) as bar:  # fmt: skip
            while self.state.epoch < cfg.epochs and self.state.step < stop:
                self._train_epoch(bar, stop)
        summary = self._finish()
        distributed.barrier(self.dist)  # rank 0 may still be writing: leave the group together
        distributed.cleanup(self.dist)
        return summary

    def _train_epoch(self, bar: Progress, stop: int) -> None:
        cfg, st = self.cfg, self.state
        self.net.train()
        seen, correct, loss_sum, started = 0, 0, 0.0, time.perf_counter()
        for images, labels in self._batches(st.epoch, st.batch_in_epoch):
            loss, hits = self._step(images, labels)
            seen, correct, loss_sum = (
                seen + len(labels),
                correct + hits,
                loss_sum + loss * len(labels),
            )
            st.step += 1
            st.batch_in_epoch += 1
            rate = seen * self.dist.world / (time.perf_counter() - started)
            bar.update(st.step, loss=loss, acc=correct / seen, rate=rate, epoch=st.epoch)
            if cfg.checkpoint_every and st.step % cfg.checkpoint_every == 0:
                self._checkpoint()
            maybe_fail(st.step)
            if st.step >= stop:
                break
        totals = distributed.all_sum(self.dist, [seen, correct, loss_sum])
        if st.batch_in_epoch >= self.steps_per_epoch:
            st.epoch, st.batch_in_epoch = st.epoch + 1, 0
        self._end_of_epoch(totals, time.perf_counter() - started)

    def _step(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[float, int]:
        cfg, device = self.cfg, self.dist.device
        images, labels = images.to(device), labels.to(device)
        if self.castling:
            apply_aux_schedule(
                self.model, self.state.step, self.total_steps, **cfg.castling_schedule
            )
        with autocast(cfg, device):
            logits = self.net(images)
            loss = F.cross_entropy(logits.float(), labels, label_smoothing=cfg.label_smoothing)
        self._optimizer_step(loss, cfg.clip_grad)
        return loss.item(), int((logits.argmax(1) == labels).sum())

    def _end_of_epoch(self, totals: list[float], seconds: float) -> None:
        seen, correct, loss_sum = totals
        val = evaluate(self.model, self.data.val, self.cfg, self.dist)
        row = {
            "epoch": self.state.epoch, "step": self.state.step,
            "train_loss": loss_sum / max(seen, 1), "train_acc": correct / max(seen, 1),
            "val_loss": val["loss"], "val_acc": val["acc"],
            "lr": self.optimizer.param_groups[0]["lr"], "seconds": seconds,
            "img_per_s": seen / seconds if seconds > 0 else 0.0,
        }  # fmt: skip
        self.state.history.append(row)
        best = val["acc"] > self.state.best_acc
        if best:
            self.state.best_acc = val["acc"]
        if self.dist.main:
            write_metrics(self.out, row, self.cfg.tensorboard)
            if best:
                save_weights(self.model, self.out / WEIGHTS_BEST, self._meta(val))
        self._checkpoint()

    def _meta(self, metrics: dict[str, Any] | None = None) -> dict[str, Any]:
        return {
            "config": json.loads(self.cfg.to_json()),
            "num_classes": self.data.num_classes, "in_chans": self.data.in_chans,
            "img_size": self.img_size, "class_names": self.data.class_names,
            "step": self.state.step, "metrics": metrics or {},
        }  # fmt: skip

    def _checkpoint_meta(self) -> dict[str, Any]:
        return self._meta()

    def _finish(self) -> dict[str, Any]:
        summary: dict[str, Any] = {"steps": self.state.step, "best_val_acc": self.state.best_acc}
        test = evaluate(self.model, self.data.test, self.cfg, self.dist)
        summary["test_acc"] = test["acc"]
        if self.castling:
            from ..layers.castling import switch_to_inference

            apply_aux_schedule(
                self.model, self.total_steps, self.total_steps, **self.cfg.castling_schedule
            )
            switch_to_inference(self.model)
            summary["test_acc_switched"] = evaluate(
                self.model, self.data.test, self.cfg, self.dist
            )["acc"]
        if self.dist.main:
            save_weights(self.model, self.out / WEIGHTS_FINAL, self._meta({"test": summary}))
            (self.out / "summary.json").write_text(json.dumps(summary, indent=2))
        return summary


def check_same_model(cfg: TrainConfig, meta: dict[str, Any], path: Path) -> None:
    """ValueError unless the checkpoint was trained with the same model settings."""
    saved = meta.get("config", {})
    for key in ("model", "model_kwargs", "attn", "attn_kwargs"):
        mine = json.loads(json.dumps(getattr(cfg, key)))  # tuples as lists, like the saved
        if saved.get(key) != mine:
            raise ValueError(
                f"--resume: {str(path)!r} holds model {saved.get('model')!r} with "
                f"{key}={saved.get(key)!r}, not {mine!r}"
            )


def gather_rng(d: distributed.Dist) -> list[dict[str, Any]]:
    """Every rank's RNG state, in rank order (on rank 0; others get their own)."""
    mine = rng_state()
    if not d.enabled:
        return [mine]
    states: list[Any] = [None] * d.world
    torch.distributed.all_gather_object(states, mine)
    return states


@torch.no_grad()
def evaluate(
    model: nn.Module, data: Dataset, cfg: TrainConfig, d: distributed.Dist | None = None
) -> dict[str, float]:
    """Loss and accuracy over `data` (each process takes a strided share; summed)."""
    d = d or distributed.Dist()
    was_training = model.training
    model.eval()
    indices = list(range(d.rank, len(data), d.world))
    loader = DataLoader(
        torch.utils.data.Subset(data, indices),
        batch_size=cfg.eval_batch_size or cfg.batch_size, generator=torch.Generator(),
    )  # fmt: skip
    seen = correct = 0
    loss_sum = 0.0
    for images, labels in loader:
        images, labels = images.to(d.device), labels.to(d.device)
        with autocast(cfg, d.device):
            logits = model(images).float()
        loss_sum += F.cross_entropy(logits, labels, reduction="sum").item()
        correct += int((logits.argmax(1) == labels).sum())
        seen += len(labels)
    model.train(was_training)
    seen, correct, loss_sum = distributed.all_sum(d, [seen, correct, loss_sum])
    return {"loss": loss_sum / max(seen, 1), "acc": correct / max(seen, 1), "n": int(seen)}


def write_metrics(out: Path, row: dict[str, Any], tensorboard: bool) -> None:
    """Append one epoch to metrics.jsonl and metrics.csv (and TensorBoard)."""
    with open(out / "metrics.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")
    path = out / "metrics.csv"
    new = not path.exists()
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)
    if tensorboard:
        from torch.utils.tensorboard import SummaryWriter

        with SummaryWriter(str(out / "tensorboard")) as writer:
            for key, value in row.items():
                if key not in ("epoch", "step"):
                    writer.add_scalar(key, value, row["step"])


def train(cfg: TrainConfig, resume: bool = False) -> dict[str, Any]:
    """Train (or, with `resume`, continue) the run `cfg` describes; returns its summary."""
    return Trainer(cfg, resume).run()
