"""Knowledge distillation from the original model: the loss and the fine-tuning loop."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..train.loop import lr_factor, param_groups


@dataclass(frozen=True)
class DistillConfig:
    """KD fine-tuning: `steps` AdamW steps of `batch_size` at `lr` (linear warm-up over the
    first tenth, cosine to lr/100), loss `alpha`·T²·KL(teacher_T ‖ student_T) +
    (1 - alpha)·CE(student, labels) at temperature `temperature`, seeded by `seed`."""

    steps: int = 200
    batch_size: int = 64
    lr: float = 5e-4
    weight_decay: float = 0.05
    temperature: float = 4.0
    alpha: float = 0.7
    clip_grad: float | None = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.steps, int) or self.steps < 0:
            raise ValueError(f"ft_steps={self.steps!r} must be an integer >= 0")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size={self.batch_size!r} must be an integer >= 1")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr={self.lr!r} must be a positive number")
        if not self.temperature > 0:
            raise ValueError(f"kd_temperature={self.temperature!r} must be > 0")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"kd_alpha={self.alpha!r} must be in [0, 1]")


def kd_loss(
    student: Tensor, teacher: Tensor, labels: Tensor, temperature: float, alpha: float
) -> Tensor:
    """(B, K) student and teacher logits, (B,) labels -> the scalar distillation loss
    alpha·T²·KL(softmax(t/T) ‖ softmax(s/T)) + (1 - alpha)·CE(s, labels)."""
    t = temperature
    soft = F.kl_div(
        F.log_softmax(student / t, dim=1), F.log_softmax(teacher / t, dim=1),
        reduction="batchmean", log_target=True,
    )  # fmt: skip
    hard = F.cross_entropy(student, labels) if alpha < 1.0 else student.new_zeros(())
    return alpha * t * t * soft + (1.0 - alpha) * hard


@dataclass
class KDSet:
    """Training images at the student's resolution with the teacher's logits for the same
    images (computed once, at the teacher's resolution) and the labels: (N, C, S, S),
    (N, K), (N,)."""

    images: Tensor
    teacher: Tensor
    labels: Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def head(self, n: int) -> KDSet:
        return KDSet(self.images[:n], self.teacher[:n], self.labels[:n])

    def batches(self, batch_size: int) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        for i in range(0, len(self), batch_size):
            sl = slice(i, i + batch_size)
            yield self.images[sl], self.teacher[sl], self.labels[sl]


@torch.no_grad()
def mean_kd_loss(model: nn.Module, data: KDSet, cfg: DistillConfig, batch: int = 256) -> float:
    """The distillation loss of `model` (eval mode) averaged over `data`."""
    was_training = model.training
    model.eval()
    total = 0.0
    for images, teacher, labels in data.batches(batch):
        loss = kd_loss(model(images), teacher, labels, cfg.temperature, cfg.alpha)
        total += float(loss) * len(labels)
    model.train(was_training)
    return total / max(len(data), 1)


def distill(model: nn.Module, data: KDSet, cfg: DistillConfig) -> list[float]:
    """Fine-tune `model` in place on `data` for `cfg.steps` steps (batches drawn without
    replacement, reshuffled each pass, seeded); returns the per-step training losses."""
    if cfg.steps == 0 or len(data) == 0:
        return []
    torch.manual_seed(cfg.seed)  # stochastic depth
    order = torch.Generator().manual_seed(cfg.seed)
    optimizer = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr)
    warmup = max(1, cfg.steps // 10)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, warmup, cfg.steps, 0.01)
    )
    batch = min(cfg.batch_size, len(data))
    model.train()
    losses: list[float] = []
    perm, at = torch.randperm(len(data), generator=order), 0
    for _ in range(cfg.steps):
        if at + batch > len(data):
            perm, at = torch.randperm(len(data), generator=order), 0
        idx = perm[at : at + batch]
        at += batch
        loss = kd_loss(
            model(data.images[idx]), data.teacher[idx], data.labels[idx],
            cfg.temperature, cfg.alpha,
        )  # fmt: skip
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.clip_grad is not None:
            nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
        optimizer.step()
        scheduler.step()
        losses.append(loss.detach().item())
    model.eval()
    return losses
