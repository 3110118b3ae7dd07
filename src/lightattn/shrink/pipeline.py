"""`shrink(ShrinkConfig)`: a trained model made smaller one step at a time, each structural
step followed by distillation from the original, every step measured; the final model
saved (safetensors `lightattn eval` loads, ONNX)."""

from __future__ import annotations

import contextlib
import copy
import logging
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..train.checkpoint import read_weights, save_weights
from ..train.data import DataBundle, build_dataset
from ..train.evaluate import load_checkpoint
from .distill import DistillConfig, KDSet, distill, kd_loss, mean_kd_loss
from .groups import head_mlp_groups, pad_state
from .measure import (
    Timed,
    accuracy,
    count_macs,
    count_params,
    export_dynamic,
    export_static,
    time_round_robin,
    weight_megabytes,
)
from .report import write_report
from .steps import Step, parse_steps
from .surgery import Arch, drop_blocks, narrow, prune, resize_input, swap_attention

FINE_TUNED = ("depth", "width", "resolution", "attention", "prune")


@dataclass
class ShrinkConfig:
    """One `lightattn shrink` run. `steps`: the step list (see `parse_steps`); `data`: the
    data set (default: the checkpoint's); `distill`: the fine-tuning after each step;
    `calib_images`: training images for importance and block choice; latency at batch 1
    and `latency_batch` with `threads` threads, `timing_rounds` round-robin rounds;
    `ort`: also time (and export) with ONNX Runtime."""

    checkpoint: str
    steps: str
    out: str
    data: str | None = None
    distill: DistillConfig = field(default_factory=DistillConfig)
    calib_images: int = 256
    latency_batch: int = 32
    threads: int = 1
    timing_rounds: int = 3
    min_time: float = 0.3
    ort: bool = True
    seed: int = 0
    log: bool = True


def log(cfg: ShrinkConfig, message: str) -> None:
    if cfg.log:
        sys.stderr.write(message + "\n")
        sys.stderr.flush()


class Data:
    """The data set at every resolution a run needs (no augmentation), split tensors cached."""

    def __init__(self, arch: Arch) -> None:
        self.config = arch.config
        self.cache: dict[int, DataBundle] = {}
        self.tensors: dict[tuple[int, str], tuple[Tensor, Tensor]] = {}

    def bundle(self, size: int) -> DataBundle:
        if size not in self.cache:
            c = self.config
            self.cache[size] = build_dataset(
                c["data"], size, augment=False, seed=c.get("data_seed", 0),
                cache_dir=c.get("data_cache"), pathfinder_counts=c.get("pathfinder_counts"),
            )  # fmt: skip
        return self.cache[size]

    def split(self, size: int, name: str) -> tuple[Tensor, Tensor]:
        """(N, C, S, S) images and (N,) labels of a split."""
        if (size, name) not in self.tensors:
            data = self.bundle(size)[name]
            items = [data[i] for i in range(len(data))]
            images = torch.stack([x for x, _ in items])
            labels = torch.tensor([y for _, y in items], dtype=torch.long)
            self.tensors[(size, name)] = images, labels
        return self.tensors[(size, name)]


@torch.no_grad()
def logits_of(model: nn.Module, images: Tensor, batch: int = 256) -> Tensor:
    model.eval()
    return torch.cat([model(images[i : i + batch]) for i in range(0, len(images), batch)])


def check_plan(steps: list[Step], arch: Arch) -> None:
    """Resolution steps must each lower the side (checked before any work)."""
    side = arch.img_size
    for step in steps:
        if step.kind == "resolution":
            side = resize_input(arch.with_config(img_size=side), step.value).img_size


def check_data(bundle: DataBundle, meta: dict[str, Any], cfg: ShrinkConfig) -> None:
    if bundle.num_classes != meta["num_classes"] or bundle.in_chans != meta["in_chans"]:
        raise ValueError(
            f"data {bundle.name!r} has {bundle.num_classes} classes and {bundle.in_chans} "
            f"channels; checkpoint {cfg.checkpoint!r} was trained for {meta['num_classes']} "
            f"and {meta['in_chans']}"
        )


class Run:
    """The state of one shrink run: teacher, data, current model and arch, the rows."""

    def __init__(self, cfg: ShrinkConfig) -> None:
        self.cfg = cfg
        self.steps = parse_steps(cfg.steps)
        self.out = Path(cfg.out)
        if (self.out / "shrink.json").exists():
            raise ValueError(f"out={cfg.out!r} already holds a shrink run (nothing overwritten)")
        self.teacher, self.meta = load_checkpoint(cfg.checkpoint)
        config = {**self.meta["config"], "img_size": self.meta["img_size"], "out": str(self.out)}
        if cfg.data is not None:
            config["data"] = cfg.data
        self.arch = Arch(config, self.meta["num_classes"], self.meta["in_chans"])
        check_plan(self.steps, self.arch)
        self.data = Data(self.arch)
        check_data(self.data.bundle(self.arch.img_size), self.meta, cfg)
        images, self.train_labels = self.data.split(self.arch.img_size, "train")
        self.teacher_logits = logits_of(self.teacher, images)
        self.rows: list[dict[str, Any]] = []
        self.timed: list[Timed] = []
        self.tmp = Path()
        self.final_onnx = "not exported (--no-ort)"

    # ------------------------------------------------------------------------------------
    def kd_set(self, size: int) -> KDSet:
        images, labels = self.data.split(size, "train")
        if not torch.equal(labels, self.train_labels):
            raise RuntimeError(f"the training split at {size}px is not in the same order")
        return KDSet(images, self.teacher_logits, labels)

    def loss_fns(self, kd: KDSet) -> tuple[Any, list, Any]:
        """(model -> mean KD loss on the calibration images, importance batches, loss)."""
        calib, d = kd.head(self.cfg.calib_images), self.cfg.distill
        batches = [(x, (t, y)) for x, t, y in calib.batches(64)]

        def model_loss(model: nn.Module) -> float:
            return mean_kd_loss(model, calib, d)

        def batch_loss(logits: Tensor, target: tuple[Tensor, Tensor]) -> Tensor:
            return kd_loss(logits, target[0], target[1], d.temperature, d.alpha)

        return model_loss, batches, batch_loss

    def test_accuracy(self, model: nn.Module, size: int) -> float:
        images, labels = self.data.split(size, "test")
        return accuracy(model, images, labels)

    def apply(self, step: Step, model: nn.Module, kd: KDSet) -> tuple[nn.Module, Arch, str]:
        model_loss, batches, batch_loss = self.loss_fns(kd)
        if step.kind == "depth":
            return drop_blocks(model, self.arch, step.value, model_loss)
        if step.kind == "width":
            return narrow(model, self.arch, step.value, batches, batch_loss)
        if step.kind == "attention":
            return swap_attention(model, self.arch, step.value)
        if step.kind == "prune":
            return prune(model, self.arch, step.value, batches, batch_loss)
        if step.kind == "resolution":
            arch = resize_input(self.arch, step.value)
            return copy.deepcopy(model), arch, f"input {self.arch.img_size} -> {arch.img_size}"
        raise AssertionError(step.kind)

    # ------------------------------------------------------------------------------------
    def record(
        self, label: str, model: nn.Module, arch: Arch, extra: dict[str, Any], export: bool = True
    ) -> None:
        size = arch.img_size
        row = {
            "step": label, "img_size": size, "params": count_params(model),
            "macs": count_macs(model, size, arch.in_chans),
            "weight_mb": weight_megabytes(model), "test_acc": self.test_accuracy(model, size),
            **extra,
        }  # fmt: skip
        self.rows.append(row)
        if export:
            self.timed.append(self.timing_item(label, model, size, len(self.rows)))
        else:
            self.timed.append(Timed(label, model, size, arch.in_chans))

    def timing_item(self, label: str, model: nn.Module, size: int, index: int) -> Timed:
        """The row's model to time; with `ort`, exported at batch 1 and the latency batch
        (static shapes: the backbones' padding rules keep H and W from being dynamic
        below the exporter's smallest network side)."""
        item = Timed(label, model, size, self.arch.in_chans)
        self.rows[-1]["ort_note"] = ""
        if not self.cfg.ort:
            return item
        for b in (1, self.cfg.latency_batch):
            path = self.tmp / f"{index:02d}-b{b}.onnx"
            why = export_static(model, b, size, self.arch.in_chans, path)
            if why:
                self.rows[-1]["ort_note"] = why
                item.onnx = {}
                break
            item.onnx[b] = path
        return item

    def run(self) -> dict[str, Any]:
        self.tmp = Path(tempfile.mkdtemp(prefix="shrink-"))  # the timed ONNX files
        try:
            return self.run_steps()
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def run_steps(self) -> dict[str, Any]:
        cfg, started = self.cfg, time.perf_counter()
        model = copy.deepcopy(self.teacher)
        self.record("start", model, self.arch, {"note": "the trained model"})
        log(cfg, f"start: {self.rows[-1]['test_acc']:.4f} test acc, {self.rows[-1]['macs']} MACs")
        fp32 = model
        for k, step in enumerate(self.steps, start=1):
            t0 = time.perf_counter()
            if step.kind == "int8":
                model = quantize(fp32)
                extra = {"note": "dynamic int8 Linear weights", "macs_note": "int8"}
                self.record(step.label, model, self.arch, extra, export=False)
                self.rows[-1]["macs"] = self.rows[-2]["macs"]  # not seen by the flop counter
                self.rows[-1]["params"] = self.rows[-2]["params"]
                self.int8_onnx()
            else:
                model, arch, note = self.apply(step, fp32, self.kd_set(self.arch.img_size))
                self.arch = arch
                kd = self.kd_set(arch.img_size)
                model_loss, _, _ = self.loss_fns(kd)
                before = {"acc_before_ft": self.test_accuracy(model, arch.img_size),
                          "kd_before_ft": model_loss(model)}  # fmt: skip
                losses = distill(model, kd, replace(cfg.distill, seed=cfg.seed + k))
                extra = {"note": note, **before, "kd_after_ft": model_loss(model),
                         "ft_steps": len(losses)}  # fmt: skip
                self.record(step.label, model, arch, extra)
                fp32 = model
            self.rows[-1]["seconds"] = time.perf_counter() - t0
            r = self.rows[-1]
            log(
                cfg,
                f"[{k}/{len(self.steps)}] {step.label}: {r['test_acc']:.4f} test acc, "
                f"{r['params']} params, {r['macs']} MACs, {r['seconds']:.0f} s ({r['note']})",
            )
        self.save_final(fp32, quantized=model is not fp32)
        log(cfg, "timing (round-robin) ...")
        time_round_robin(
            self.timed, (1, cfg.latency_batch), cfg.threads, cfg.timing_rounds,
            min_time=cfg.min_time,
        )  # fmt: skip
        for row, item in zip(self.rows, self.timed, strict=True):
            row.update(item.best())
        result = self.result(time.perf_counter() - started)
        write_report(result, self.out)
        return result

    def int8_onnx(self) -> None:
        """The int8 row's ONNX files: the previous row's quantized (dynamic, MatMul/Gemm)."""
        previous, item = self.timed[-2], self.timed[-1]
        item.onnx = {}
        self.rows[-1]["ort_note"] = ""
        if not self.cfg.ort:
            return
        if not previous.onnx:
            self.rows[-1]["ort_note"] = self.rows[-2].get("ort_note") or "no fp32 ONNX"
            return
        for b, src in previous.onnx.items():
            item.onnx[b] = quantize_onnx(src, self.tmp / f"{len(self.rows):02d}-b{b}.onnx")

    # ------------------------------------------------------------------------------------
    def save_final(self, model: nn.Module, quantized: bool) -> None:
        """final.safetensors (+ config.json) that `lightattn eval` loads: the pruned heads
        and channels stored as zeros at the unpruned shapes (the same outputs); final.onnx
        (and final-int8.onnx) of the compact model."""
        self.out.mkdir(parents=True, exist_ok=True)
        arch, full = self.arch, self.arch.build_full()
        state = {k: v.detach() for k, v in model.state_dict().items()}
        if arch.pruned:
            keep = {k: torch.tensor(v) for k, v in arch.pruned.items()}
            shapes = {k: v.shape for k, v in full.state_dict().items()}
            state = pad_state(state, shapes, head_mlp_groups(full), keep)
        full.load_state_dict(state)
        names = self.data.bundle(arch.img_size).class_names
        meta = {
            "config": arch.config, "num_classes": arch.num_classes, "in_chans": arch.in_chans,
            "img_size": arch.img_size, "class_names": names, "step": 0,
            "metrics": {"test_acc": self.rows[-2 if quantized else -1]["test_acc"],
                        "test_acc_int8": self.rows[-1]["test_acc"] if quantized else None},
            "shrink": {"pruned": arch.pruned, "int8": quantized, "teacher": self.cfg.checkpoint,
                       "steps": [s.label for s in self.steps]},
        }  # fmt: skip
        save_weights(full, self.out / "final.safetensors", meta)
        (self.out / "config.json").write_text(arch.train_config().to_json())
        if self.cfg.ort:
            self.export_final(model, quantized)

    def export_final(self, model: nn.Module, quantized: bool) -> None:
        """final.onnx with dynamic batch, H and W where the exporter can (else the timed
        batch-1 file, static), and final-int8.onnx from it when the run ended with int8."""
        path = self.out / "final.onnx"
        why = export_dynamic(model, self.arch.img_size, self.arch.in_chans, path)
        fp32_item = self.timed[-2] if quantized else self.timed[-1]
        self.final_onnx = "dynamic batch, H, W"
        if why:
            if 1 not in fp32_item.onnx:
                self.final_onnx = f"not exported: {why}"
                return
            shutil.copy(fp32_item.onnx[1], path)
            self.final_onnx = f"static 1x{self.arch.in_chans}x{self.arch.img_size}^2 ({why})"
        if quantized:
            quantize_onnx(path, self.out / "final-int8.onnx")

    def result(self, seconds: float) -> dict[str, Any]:
        return {
            "checkpoint": self.cfg.checkpoint, "data": self.arch.config["data"],
            "steps": [s.label for s in self.steps], "rows": self.rows,
            "distill": asdict(self.cfg.distill), "seed": self.cfg.seed,
            "threads": self.cfg.threads, "latency_batch": self.cfg.latency_batch,
            "timing_rounds": self.cfg.timing_rounds, "wall_seconds": seconds,
            "final": {"arch": asdict(self.arch), "onnx": self.final_onnx, "files": sorted(
                p.name for p in self.out.glob("final*") if p.is_file())},
        }  # fmt: skip


@contextlib.contextmanager
def quiet_root_logger() -> Iterator[None]:
    """onnxruntime's quantizer warns on the root logger for every file ("consider
    pre-processing"); keep that off the command's output."""
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def quantize_onnx(src: Path, dst: Path) -> Path:
    from ..export.quantize import quantize_onnx_dynamic

    with quiet_root_logger():
        return quantize_onnx_dynamic(src, dst)


def quantize(model: nn.Module) -> nn.Module:
    """Dynamic int8 of the Linears (lightattn.export.quantize, torch's quantize_dynamic)."""
    from ..export.quantize import quantize_dynamic_torch

    return quantize_dynamic_torch(model)


def shrink(cfg: ShrinkConfig) -> dict[str, Any]:
    """Run the steps of `cfg` and write shrink.md/json/csv/png and the final model under
    `cfg.out`; returns the result (rows of measurements per step)."""
    return Run(cfg).run()


def load_shrunk(path: str | Path, int8: bool = True) -> tuple[nn.Module, dict[str, Any]]:
    """The compact model of a `final.safetensors` written by `shrink` (pruned heads and
    channels cut again; int8-quantized if the run ended with int8 and `int8`), eval mode,
    with its metadata."""
    state, meta = read_weights(path)
    info = meta.get("shrink")
    if info is None:
        raise ValueError(f"checkpoint {str(path)!r} was not written by lightattn shrink")
    c = {**meta["config"], "img_size": meta["img_size"]}
    arch = Arch(c, meta["num_classes"], meta["in_chans"], info.get("pruned", {}))
    full = arch.build_full()
    full.load_state_dict(state)
    if arch.pruned:
        keep = {k: torch.tensor(v) for k, v in arch.pruned.items()}
        from .groups import prune_in_place

        prune_in_place(full, head_mlp_groups(full), keep)
    model = full.eval()
    if int8 and info.get("int8"):
        model = quantize(model)
    return model, meta
