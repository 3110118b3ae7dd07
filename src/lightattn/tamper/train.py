"""`train_tamper(config)`: training of the tamper-localization network on a Tp/ + Gt/ set.

Loss: BCE + Dice on the per-pixel mask logits, plus `detail_weight` x STDC's detail loss
(detail head at 1/8 against `detail_target` of the mask at full size) and `score_weight` x BCE
on the image score (label: the mask has a tampered pixel). AdamW with warm-up + cosine,
gradient clipping at 1.0, random crops (or zero padding) to `img_size` with random horizontal
flips. Each epoch the val split is scored at native size (batch 1) with the IMDL-BenCo
metrics; best.safetensors / final.safetensors are tamper checkpoints
(`lightattn.tamper.checkpoint`). Step checkpoints are atomic and a resumed run reaches the
same weights as an uninterrupted one: the crops and flips are a pure function of
(seed, epoch, image index), the sampler is a seeded DistributedSampler, and the RNG states,
optimizer and scheduler are restored. Runs under torchrun (DDP) as `lightattn.train` does.
"""

from __future__ import annotations

import csv
import json
import math
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import BatchSampler, DataLoader, Dataset, DistributedSampler

from ..train import distributed
from ..train.checkpoint import latest_checkpoint, read_weights
from ..train.loop import (
    ResumableRun,
    autocast,
    maybe_fail,
    seed_everything,
    write_metrics,
)
from ..train.progress import Progress
from . import metrics
from .checkpoint import save_tamper_model
from .data import TamperDataset
from .network import create_tamper_model, detail_loss, detail_target, dice_loss

WEIGHTS_BEST, WEIGHTS_FINAL = "best.safetensors", "final.safetensors"
CLIP_GRAD = 1.0
VAL_FRACTION = 0.1
VAL_CHUNK = 64  # val images scored per metrics.evaluate call
VAL_KEYS = ("f1", "iou", "auc", "image_auc")  # per-epoch columns of metrics.csv


@dataclass
class TamperTrainConfig:
    """One training run of the tamper network (see the module doc)."""

    data: str
    out: str
    variant: str = "stdc1"
    width: float = 1.0
    inner: str | None = "mhsa"
    img_size: int = 384
    epochs: int = 10
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 0.5
    seed: int = 0
    threads: int | None = None
    amp: str = "none"
    checkpoint_every: int = 0
    max_steps: int | None = None
    progress: bool = True
    device: str = "auto"
    detail_weight: float = 1.0
    score_weight: float = 0.2
    noise: bool = False
    init: str | None = None
    init_skip: tuple[str, ...] = ()

    def model_kwargs(self) -> dict[str, Any]:
        """The `create_tamper_model` arguments of this run."""
        kwargs = {"variant": self.variant, "width": self.width, "inner": self.inner}
        return kwargs | ({"noise": True} if self.noise else {})


@dataclass
class RunState:
    """Counters restored on resume."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    best_f1: float = -1.0
    history: list[dict[str, Any]] = field(default_factory=list)


# data ------------------------------------------------------------------------------------
def read_manifest_split(root: Path) -> dict[str, str] | None:
    """name -> split from `root/manifest.csv` when it has a split column, else None."""
    path = root / "manifest.csv"
    if not path.is_file():
        return None
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or "split" not in rows[0] or "name" not in rows[0]:
        return None
    return {row["name"]: row["split"] for row in rows}


def split_indices(names: list[str], root: Path, seed: int) -> tuple[list[int], list[int]]:
    """(train, val) item indices: the manifest's split column, else a seeded 90/10 cut."""
    split = read_manifest_split(root)
    if split is not None:
        train = [i for i, n in enumerate(names) if split.get(n, "train") == "train"]
        val = [i for i, n in enumerate(names) if split.get(n) == "val"]
        return train, val
    order = sorted(range(len(names)), key=lambda i: names[i])
    perm = np.random.default_rng(seed).permutation(len(order))
    n_val = max(1, round(len(order) * VAL_FRACTION)) if len(order) > 1 else 0
    val = sorted(order[j] for j in perm[:n_val])
    train = sorted(order[j] for j in perm[n_val:])
    return train, val


def crop_pair(
    image: Tensor, mask: Tensor, size: int, rng: np.random.Generator
) -> tuple[Tensor, Tensor]:
    """Zero-pad (image, mask) to at least size x size, take a random size x size crop and
    flip it horizontally with probability 1/2 (the same transform on both)."""
    _, h, w = image.shape
    ph, pw = max(0, size - h), max(0, size - w)
    if ph or pw:
        top, left = int(rng.integers(0, ph + 1)), int(rng.integers(0, pw + 1))
        pad = (left, pw - left, top, ph - top)
        image, mask = F.pad(image, pad), F.pad(mask, pad)
        h, w = h + ph, w + pw
    y, x = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
    image, mask = image[:, y : y + size, x : x + size], mask[:, y : y + size, x : x + size]
    if rng.random() < 0.5:
        image, mask = image.flip(-1), mask.flip(-1)
    return image.contiguous(), mask.contiguous()


class CropDataset(Dataset):
    """Training view of a TamperDataset: item (epoch, i) is image i cropped and flipped by a
    generator seeded with (seed, epoch, i), so the augmentation needs no stored RNG state."""

    def __init__(self, base: TamperDataset, size: int, seed: int) -> None:
        self.base, self.size, self.seed = base, size, seed

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key: tuple[int, int]) -> tuple[Tensor, Tensor]:
        epoch, i = key
        image, mask, _ = self.base[i]
        rng = np.random.default_rng([self.seed, epoch, i])
        return crop_pair(image, mask, self.size, rng)


class EpochKeys:
    """Batches of (epoch, index) keys from a BatchSampler of indices."""

    def __init__(self, batches: list[list[int]], epoch: int) -> None:
        self.batches, self.epoch = batches, epoch

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for batch in self.batches:
            yield [(self.epoch, i) for i in batch]

    def __len__(self) -> int:
        return len(self.batches)


def load_dataset(cfg: TamperTrainConfig) -> TamperDataset:
    """The data set at cfg.data; ValueError naming it when missing or empty."""
    root = Path(cfg.data)
    if not root.is_dir():
        raise ValueError(f"data={cfg.data!r} is not a folder")
    return TamperDataset(root)


def load_init(model: nn.Module, path: str, skip: tuple[str, ...] = ()) -> dict[str, int]:
    """Start `model` from the weights in `path` (any lightattn weights file): every tensor
    whose name and shape fit is copied, except names starting with a prefix in `skip`; the
    rest (e.g. another `inner`'s) keep their fresh initialisation. Returns the counts;
    ValueError when nothing fits."""
    state, _ = read_weights(path)
    own = model.state_dict()
    fits = {
        k: v for k, v in state.items()
        if k in own and own[k].shape == v.shape and not k.startswith(skip)
    }  # fmt: skip
    if not fits:
        raise ValueError(f"init={path!r}: no tensor fits this network")
    model.load_state_dict(fits, strict=False)
    return {"loaded": len(fits), "fresh": len(own) - len(fits), "unused": len(state) - len(fits)}


# loss ------------------------------------------------------------------------------------
def tamper_loss(
    out: dict[str, Tensor], mask: Tensor, detail_weight: float, score_weight: float
) -> tuple[Tensor, dict[str, float]]:
    """Total loss and its parts: mask BCE + Dice, detail loss, image-score BCE."""
    logits = out["mask_logits"].float()
    mask_bce = F.binary_cross_entropy_with_logits(logits, mask)
    mask_dice = dice_loss(torch.sigmoid(logits), mask)
    total = mask_bce + mask_dice
    parts = {"mask_bce": mask_bce.item(), "mask_dice": mask_dice.item()}
    if detail_weight and "detail_logits" in out:
        det = detail_loss(out["detail_logits"].float(), detail_target(mask))
        total = total + detail_weight * det
        parts["detail"] = det.item()
    if score_weight:
        label = (mask.flatten(1) > 0.5).any(1).float()
        score = F.binary_cross_entropy_with_logits(out["score_logits"].float(), label)
        total = total + score_weight * score
        parts["score"] = score.item()
    return total, parts


@torch.no_grad()
def validate(
    model: nn.Module, data: TamperDataset, indices: list[int], cfg: TamperTrainConfig,
    device: torch.device, chunk: int = VAL_CHUNK,
) -> dict[str, float]:  # fmt: skip
    """IMDL-BenCo metrics over the val images at native size, batch 1. Maps are scored
    `chunk` images at a time with `metrics.evaluate` (memory independent of the split's size)
    and the per-image means are combined weighted by each chunk's tampered count."""
    if not indices:
        return {}
    was_training = model.training
    model.eval()
    parts, scores, labels = [], [], []
    for start in range(0, len(indices), chunk):
        probs, gts = [], []
        for i in indices[start : start + chunk]:
            image, mask, _ = data[i]
            with autocast(cfg, device):
                out = model(image[None].to(device))
            probs.append(torch.sigmoid(out["mask_logits"].float())[0, 0].cpu().numpy())
            gts.append(mask[0].numpy())
            scores.append(float(torch.sigmoid(out["score_logits"].float())[0]))
            labels.append(bool(mask.any()))
        parts.append(metrics.evaluate(probs, gts))
    model.train(was_training)
    return combine_chunks(parts, scores, labels)


def combine_chunks(
    parts: list[dict[str, float]], scores: list[float], labels: list[bool]
) -> dict[str, float]:
    """Per-image pixel means of the chunks weighted by their tampered counts, and the image
    metrics over all scores."""
    tampered = sum(p["n_tampered"] for p in parts)
    out = {"n_images": float(len(scores)), "n_tampered": tampered,
           "n_authentic": float(len(scores)) - tampered}  # fmt: skip
    for key in ("f1", "iou", "auc", "f1_best_per_image"):
        pairs = [(p[key], p["n_tampered"]) for p in parts if math.isfinite(p[key])]
        weight = sum(n for _, n in pairs)
        out[key] = sum(v * n for v, n in pairs) / weight if weight else float("nan")
    both = any(labels) and not all(labels)
    out["image_auc"] = metrics.image_auc(scores, labels) if both else float("nan")
    out["image_acc"] = metrics.image_accuracy(scores, labels) if both else float("nan")
    return out


# the run -----------------------------------------------------------------------------------
class TamperTrainer(ResumableRun):
    """One run of `TamperTrainConfig`; `run()` trains (or resumes) and returns the summary."""

    def __init__(self, cfg: TamperTrainConfig, resume: bool = False) -> None:
        self.cfg, self.resume, self.out = cfg, resume, Path(cfg.out)
        if cfg.img_size < 32:
            raise ValueError(f"img_size={cfg.img_size} must be >= 32")
        self.dist = distributed.setup(cfg.device)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self._check_out_dir()
        seed_everything(cfg.seed)
        self.data = load_dataset(cfg)
        self.train_idx, self.val_idx = split_indices(self.data.names, Path(cfg.data), cfg.seed)
        self.crops = CropDataset(self.data, cfg.img_size, cfg.seed)
        self.model = create_tamper_model(**cfg.model_kwargs())
        self.init_report = (
            load_init(self.model, cfg.init, tuple(cfg.init_skip))
            if cfg.init and not resume
            else None
        )
        self.model.to(self.dist.device)
        if cfg.batch_size % self.dist.world:
            raise ValueError(
                f"batch_size={cfg.batch_size} (global) is not divisible by the "
                f"{self.dist.world} processes"
            )
        self.local_batch = cfg.batch_size // self.dist.world
        if self.local_batch < 2:
            raise ValueError(f"batch_size={cfg.batch_size} gives < 2 images per process (BN)")
        self.steps_per_epoch = len(self.train_idx) // cfg.batch_size
        if self.steps_per_epoch < 1:
            raise ValueError(
                f"batch_size={cfg.batch_size} is larger than the training split "
                f"({len(self.train_idx)} images in {cfg.data!r})"
            )
        self.total_steps = cfg.epochs * self.steps_per_epoch
        self._make_optimizer(cfg, floor=0.0)
        self.state = RunState()
        self.last_val: dict[str, float] = {}
        if resume:
            self._restore()
        self.net = self._wrap()

    # set-up -----------------------------------------------------------------------------
    def _check_out_dir(self) -> None:
        found = latest_checkpoint(self.out)
        if self.resume and found is None:
            raise ValueError(f"--resume: no checkpoint in {str(self.out)!r} (nothing to resume)")
        if self.resume:
            saved = read_weights(found[0])[1].get("model", {})
            mine = self.cfg.model_kwargs()
            if saved != mine:
                raise ValueError(f"--resume: {str(found[0])!r} holds {saved}, not {mine}")
        taken = found is not None or (self.out / WEIGHTS_FINAL).exists()
        if not self.resume and taken:
            raise ValueError(
                f"out={str(self.out)!r} already holds a run; pass --resume to continue it or "
                "choose another --out (nothing was overwritten)"
            )

    def _batches(self, epoch: int, skip: int) -> Iterator[tuple[Tensor, Tensor]]:
        sampler = DistributedSampler(
            self.train_idx, num_replicas=self.dist.world, rank=self.dist.rank,
            shuffle=True, seed=self.cfg.seed, drop_last=True,
        )  # fmt: skip
        sampler.set_epoch(epoch)
        positions = BatchSampler(sampler, self.local_batch, drop_last=True)
        batches = [[self.train_idx[p] for p in b] for b in islice(positions, skip, None)]
        loader = DataLoader(
            self.crops, batch_sampler=EpochKeys(batches, epoch), generator=torch.Generator()
        )
        return islice(iter(loader), self.steps_per_epoch - skip)

    # training ---------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """Train to the end (or max_steps); returns the summary."""
        cfg, started = self.cfg, time.perf_counter()
        if self.dist.main:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
        stop = min(cfg.max_steps or self.total_steps, self.total_steps)
        with Progress(enabled=cfg.progress and self.dist.main, total=stop,
                      done=self.state.step) as bar:  # fmt: skip
            while self.state.epoch < cfg.epochs and self.state.step < stop:
                self._train_epoch(bar, stop)
        summary = self._finish(time.perf_counter() - started)
        distributed.barrier(self.dist)  # rank 0 may still be writing: leave the group together
        distributed.cleanup(self.dist)
        return summary

    def _train_epoch(self, bar: Progress, stop: int) -> None:
        cfg, st = self.cfg, self.state
        self.net.train()
        seen, loss_sum, started = 0, 0.0, time.perf_counter()
        for images, masks in self._batches(st.epoch, st.batch_in_epoch):
            loss = self._step(images, masks)
            seen, loss_sum = seen + len(images), loss_sum + loss * len(images)
            st.step += 1
            st.batch_in_epoch += 1
            rate = seen * self.dist.world / max(time.perf_counter() - started, 1e-9)
            bar.update(st.step, loss=loss, acc=0.0, rate=rate, epoch=st.epoch)
            if cfg.checkpoint_every and st.step % cfg.checkpoint_every == 0:
                self._checkpoint()
            maybe_fail(st.step)
            if st.step >= stop:
                break
        seen, loss_sum = distributed.all_sum(self.dist, [seen, loss_sum])
        if st.batch_in_epoch >= self.steps_per_epoch:
            st.epoch, st.batch_in_epoch = st.epoch + 1, 0
        self._end_of_epoch(seen, loss_sum, time.perf_counter() - started)

    def _step(self, images: Tensor, masks: Tensor) -> float:
        cfg, device = self.cfg, self.dist.device
        images, masks = images.to(device), masks.to(device)
        with autocast(cfg, device):
            out = self.net(images)
        loss, _ = tamper_loss(out, masks, cfg.detail_weight, cfg.score_weight)
        self._optimizer_step(loss, CLIP_GRAD)
        return loss.item()

    def _end_of_epoch(self, seen: float, loss_sum: float, seconds: float) -> None:
        val: dict[str, float] = {}
        if self.dist.main:
            val = validate(self.model, self.data, self.val_idx, self.cfg, self.dist.device)
        self.last_val = val
        nan = float("nan")
        shown = [val.get(k, nan) if self.dist.main else 0.0 for k in VAL_KEYS]
        shown = distributed.all_sum(self.dist, shown)  # rank 0's values on every rank
        row = {
            "epoch": self.state.epoch, "step": self.state.step,
            "train_loss": loss_sum / max(seen, 1),
            **{f"val_{k}": v for k, v in zip(VAL_KEYS, shown, strict=True)},
            "lr": self.optimizer.param_groups[0]["lr"], "seconds": seconds,
            "img_per_s": seen / seconds if seconds > 0 else 0.0,
        }  # fmt: skip
        self.state.history.append(row)
        f1 = row["val_f1"] if math.isfinite(row["val_f1"]) else 0.0
        best = f1 > self.state.best_f1
        if best:
            self.state.best_f1 = f1
        if self.dist.main:
            write_metrics(self.out, row, tensorboard=False)
            if best:
                self._save(self.out / WEIGHTS_BEST, val)
        self._checkpoint()

    def _save(self, path: Path, val: dict[str, Any], **more: Any) -> None:
        extra = {"config": asdict(self.cfg), "val": val, "step": self.state.step, **more}
        save_tamper_model(self.model, path, self.cfg.model_kwargs(), extra=extra)

    def _checkpoint_meta(self) -> dict[str, Any]:
        return {"kind": "tamper", "model": self.cfg.model_kwargs(), "config": asdict(self.cfg)}

    def _finish(self, seconds: float) -> dict[str, Any]:
        last = self.state.history[-1] if self.state.history else {}
        if not self.last_val and self.dist.main and self.val_idx:  # resumed at the very end
            self.last_val = validate(self.model, self.data, self.val_idx, self.cfg,
                                     self.dist.device)  # fmt: skip
        summary = {
            "steps": self.state.step, "best_val_f1": self.state.best_f1,
            "final_val_f1": last.get("val_f1", float("nan")), "seconds": seconds,
            "train_images": len(self.train_idx), "val_images": len(self.val_idx),
        }  # fmt: skip
        if self.init_report is not None:
            summary["init"] = {"from": self.cfg.init, **self.init_report}
        if self.dist.main:
            self._save(self.out / WEIGHTS_FINAL, self.last_val, summary=summary)
            (self.out / "summary.json").write_text(json.dumps(summary, indent=2))
        return summary


def train_tamper(cfg: TamperTrainConfig, resume: bool = False) -> dict[str, Any]:
    """Train (or, with `resume`, continue) the tamper run `cfg` describes; returns a summary
    with steps, best_val_f1, final_val_f1 and seconds (wall)."""
    return TamperTrainer(cfg, resume).run()
