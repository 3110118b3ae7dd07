"""Whole named models with the layer benchmark's machinery (`lightattn bench --models`):
each (model, batch, size) is one case, timed, profiled and skipped by the same rules as a
layer's path; its row holds img/s, ms, peak memory, params and `model.macs`."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import torch
from torch import nn

from lightattn.models import create_model, list_models, model_entry

from .estimate import Point
from .machine import BenchError
from .measure import Timer
from .memory import peak_memory
from .results import (
    BenchResult,
    ModelBenchConfig,
    ModelRow,
    PathResult,
    add_gemm_fractions,
    fill_path,
    model_config_dict,
)
from .runner import Runner, first_line, make_call, make_input, probe_sizes, run_benchmark, unwrap

# a model's first case is probed at batch 1 at its own size up to 224² pixels, else at
# about 112² and 224² (same aspect)
PROBE_PIXELS = (112 * 112, 224 * 224)

Case = tuple[str, int, tuple[int, int]]  # (model, batch, (H, W))


def resolve_models(names: Sequence[str]) -> list[str]:
    """The named models to run: `all` stands for every one of `list_models()`; duplicates
    dropped. BenchError naming the unknown ones (the wording of `lightattn models`)."""
    known = list_models()
    out = [m for n in names for m in (known if n == "all" else [n])]
    check_models(out)
    return list(dict.fromkeys(out))


def check_models(names: Sequence[str], extra: Sequence[str] = ()) -> None:
    """BenchError when a name is neither a named model nor one of `extra`."""
    known = list_models()
    unknown = [n for n in dict.fromkeys(names) if n not in known and n not in extra]
    if unknown:
        raise BenchError(f"unknown model(s) {unknown}; known: {known}")


def build_models(
    config: ModelBenchConfig, device: torch.device, dtype: torch.dtype
) -> dict[str, nn.Module]:
    """name -> model (`create_model(name)` or the config's factory; seed `config.seed`) in
    the benchmark's dtype, device and mode (eval, or train with `backward`)."""
    if not config.models:
        raise BenchError("--models needs at least one model name")
    check_models(config.models, list(config.factories))
    models: dict[str, nn.Module] = {}
    for name in dict.fromkeys(config.models):
        factory = config.factories.get(name) or partial(create_model, name)
        torch.manual_seed(config.seed)
        try:
            model = factory().to(device=device, dtype=dtype).train(config.backward)
        except Exception as err:  # noqa: BLE001 - any build failure is a bad setting
            raise BenchError(f"cannot build {name!r}: {first_line(err)}") from None
        models[name] = model
    return models


def model_macs(model: nn.Module, h: int, w: int) -> int | None:
    """`model.macs(h, w)` for one image; None when the model does not count them."""
    try:
        return int(model.macs(h, w))
    except (AttributeError, NotImplementedError):
        return None


def family_of(name: str) -> str:
    """The registered family of a named model ("" for one built by a factory)."""
    try:
        return model_entry(name).family
    except ValueError:
        return ""


class ModelRunner(Runner):
    """A Runner whose cases are (model, batch, size): the same timing, peak memory, skip
    rule, GEMM rate and compile handling; no reference path and no baseline."""

    config: ModelBenchConfig

    def __init__(
        self, config: ModelBenchConfig, started: float | None = None, timer: Timer | None = None
    ) -> None:
        if config.layout == "tokens":
            raise BenchError(
                "--layout tokens does not apply to --models: a model takes (B, C, H, W) images"
            )
        super().__init__(config, started, timer)

    def build(self) -> dict[str, nn.Module]:
        return build_models(self.config, self.device, self.dtype)

    def _reference_modules(self) -> dict[str, nn.Module]:
        return {}  # a whole model has no reference path

    def cases(self) -> list[Case]:
        """(model, batch, size) in the order they run: by pixels per call (batch × H × W),
        so that each model's skip rule extrapolates upwards, the models side by side."""
        sizes = list(dict.fromkeys(self.config.sizes))
        pairs = [(b, s) for b in dict.fromkeys(self.config.batches) for s in sizes]
        pairs.sort(key=lambda p: (p[0] * p[1][0] * p[1][1], p[1][0] * p[1][1], p))
        return [(name, batch, size) for batch, size in pairs for name in self.modules]

    def case_label(self, case: Case) -> tuple[str, tuple[int, int]]:
        name, batch, size = case
        return f"{name} b{batch}", size

    def finish(self, rows: list[ModelRow]) -> None:
        add_gemm_fractions(rows, self.gemm_flops / 1e9)

    def config_dict(self) -> dict[str, Any]:
        return model_config_dict(self.config)

    def end_facts(self) -> dict[str, Any]:
        """The load average at the end too: whole models run long enough for another
        process to start or stop in the meantime."""
        if not hasattr(os, "getloadavg"):
            return {}
        return {"load_average_at_end": [round(v, 2) for v in os.getloadavg()]}

    def run_case(self, name: str, batch: int, size: tuple[int, int]) -> ModelRow:
        """Measure one (model, batch, size) and return its row."""
        row = self._model_row(name, batch, *size)
        result = self.measure_model(name, batch, size)
        row.note = "; ".join(n for n in fill_path(row, result, self.config) if n)
        self.add_ort(row, name, batch, size)
        return row

    def case_input(self, name: str, batch: int, h: int, w: int) -> torch.Tensor:
        return self.images(self.modules[name], batch, h, w)

    def case_work(self, name: str, batch: int, h: int, w: int) -> tuple[int, int | None]:
        """(pixels, MACs) of one call: a model's history is in pixels per call."""
        per_image = model_macs(unwrap(self.modules[name]), h, w)
        return batch * h * w, None if per_image is None else per_image * batch

    def _model_row(self, name: str, batch: int, h: int, w: int) -> ModelRow:
        model = unwrap(self.modules[name])
        c = self.config
        per_image = model_macs(model, h, w)
        return ModelRow(
            model=name, family=family_of(name), batch=batch, h=h, w=w, dtype=c.dtype,
            device=self.device.type, mode=c.mode, compiled=c.compile, layout=c.layout,
            params=sum(p.numel() for p in model.parameters()), macs_per_image=per_image,
            macs=None if per_image is None else per_image * batch,
        )  # fmt: skip

    def images(self, model: nn.Module, batch: int, h: int, w: int) -> torch.Tensor:
        """Random images for `model` (its `in_chans`, default 3) in the configured layout."""
        chans = getattr(unwrap(model), "in_chans", 3)
        x, _ = make_input(self.config, batch, h, w, self.device, self.dtype, channels=chans)
        return x

    def measure_model(self, name: str, batch: int, size: tuple[int, int]) -> PathResult:
        """Time and profile one case unless the skip rule says no. A model's history is in
        pixels per call (batch × H × W) and MACs per call."""
        model = self.modules[name]
        h, w = size
        per_image = model_macs(unwrap(model), h, w)

        def make() -> Callable[[], object]:
            return make_call(model, self.images(model, batch, h, w), self.config.backward)

        return self.measure(
            (name, "fast"), batch * h * w, None if per_image is None else per_image * batch,
            make, lambda history: self._probe_model(model, history, batch, h, w),
        )  # fmt: skip

    def _probe_model(
        self, model: nn.Module, history: list[Point], batch: int, h: int, w: int
    ) -> None:
        """Seed an empty history with batch-1 calls of the eager model scaled to the batch
        (as a layer's first size is probed): at this size up to 224² pixels, else at about
        112² and 224²."""
        inner = unwrap(model)
        for ph, pw in probe_sizes(h, w, PROBE_PIXELS):
            call = make_call(inner, self.images(inner, 1, ph, pw), self.config.backward)
            try:
                call()
                seconds = self.timer(call)
                mem = peak_memory(call, self.device)
            except Exception:  # noqa: BLE001 - the real case will report the error
                return
            macs = (model_macs(inner, ph, pw) or 0) * batch
            pixels = batch * ph * pw
            history.append(Point(pixels, seconds * batch, mem * batch if mem else None, macs))


def make_model_runner(
    config: ModelBenchConfig, started: float | None = None, timer: Timer | None = None
) -> ModelRunner:
    """Validate `config` (BenchError on bad settings), set the torch threads it asks for and
    build its models (see runner.make_runner)."""
    if config.threads:
        torch.set_num_threads(config.threads)
    return ModelRunner(config, started, timer)


def run_model_benchmark(
    config: ModelBenchConfig,
    on_case: Callable[[int, int, str, tuple[int, int]], None] | None = None,
    runner: ModelRunner | None = None,
) -> BenchResult:
    """Run every (model, batch, size) of `config` (on `runner` if already made by
    `make_model_runner`); `on_case(index, total, label, size)` is called before each."""
    runner = runner or make_model_runner(config)
    return run_benchmark(config, on_case, runner)
