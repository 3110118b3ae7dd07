"""`lightattn bench`: options -> BenchConfig, run with a progress bar, print and write."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

import lightattn

from ..bench import compare, report
from ..bench.machine import BenchError
from ..bench.models import make_model_runner, resolve_models
from ..bench.presets import (
    PRESETS,
    Preset,
    check_available,
    differences,
    preset_kwargs,
    preset_summary,
    preset_table,
)
from ..bench.report import is_models
from ..bench.results import (
    BenchConfig,
    BenchResult,
    ModelBenchConfig,
    Variant,
    default_variants,
)
from ..bench.runner import Runner, make_runner, run_benchmark
from .args import DEFAULT, MODEL_DEFAULT

# layer options that a run of whole models (--models) does not take
LAYER_ONLY = ("attn", "dim", "heads", "kwargs", "variant", "preset")


def pick(args: argparse.Namespace, preset: Preset | None, key: str) -> Any:
    """An explicit option, else the preset's value, else the default."""
    value = getattr(args, key)
    if value is not None:
        return value
    if preset is not None:
        return getattr(preset, key)
    return getattr(DEFAULT, key)


def kwargs_from(
    args: argparse.Namespace, preset: Preset | None, attn: list[str]
) -> dict[str, dict[str, Any]]:
    """The preset's kwargs of the mechanisms being run, updated with every --kwargs
    name:key=value."""
    out = preset_kwargs(preset, attn) if preset else {}
    for name, key, value in args.kwargs:
        out.setdefault(name, {})[key] = value
    return out


def check_names(names: list[str], variants: dict[str, Variant]) -> None:
    """BenchError for a name that is neither registered (with the registry's suggestion)
    nor a variant's label."""
    for name in names:
        if name in variants:
            continue
        try:
            lightattn.layers.get_attention_class(name)
        except ValueError as err:
            raise BenchError(str(err)) from None


def variants_from(args: argparse.Namespace) -> dict[str, Variant]:
    """The default variants and every --variant LABEL=NAME (its kwargs come from --kwargs)."""
    variants = default_variants()
    for label, name in args.variant:
        check_names([name], {})
        variants[label] = Variant(name)
    return variants


def attn_from(args: argparse.Namespace, preset: Preset | None) -> list[str]:
    """--attn (and the --variant labels, which are always run), else the preset's, else
    empty: every registered mechanism and the default variants."""
    if args.attn is not None:
        return [*args.attn, *(label for label, _ in args.variant)]
    if preset is not None:
        return [*preset.attn, *(label for label, _ in args.variant)]
    return []


def config_from(args: argparse.Namespace) -> tuple[BenchConfig, Preset | None]:
    """Validate the options (BenchError) and make the run's configuration (a
    ModelBenchConfig with --models)."""
    if args.models is not None:
        return model_config_from(args), None
    if args.batch is not None and len(args.batch) > 1:
        raise BenchError("--batch takes one value (several only with --models)")
    preset = PRESETS[args.preset] if args.preset else None
    if preset is not None and args.attn is None:
        check_available(preset)
    variants = variants_from(args)
    attn = attn_from(args, preset)
    check_names(attn, variants)
    if args.fail_if_slower is not None and not args.compare:
        raise BenchError("--fail-if-slower needs --compare RESULTS_JSON")
    config = BenchConfig(
        attn=list(attn), sizes=list(pick(args, preset, "sizes")), dim=pick(args, preset, "dim"),
        heads=pick(args, preset, "heads"),
        batch=args.batch[0] if args.batch else pick(args, preset, "batch"),
        dtype=pick(args, preset, "dtype"), device=args.device, backward=args.backward,
        compile=args.compile, layout=args.layout, variants=variants,
        kwargs=kwargs_from(args, preset, list(attn)),
        min_time=pick(args, preset, "min_time"), min_runs=pick(args, preset, "min_runs"),
        reference=not args.no_reference,
        max_case_seconds=pick(args, preset, "max_case_seconds"),
        max_memory_gb=args.max_memory_gb, time_budget=pick(args, preset, "time_budget"),
        threads=args.threads, runtime=args.runtime,
    )  # fmt: skip
    return config, preset


def model_config_from(args: argparse.Namespace) -> ModelBenchConfig:
    """The configuration of `lightattn bench --models ...` (BenchError for an unknown model,
    a layer-only option, or --layout tokens)."""
    given = [f"--{key}" for key in LAYER_ONLY if getattr(args, key) not in (None, [])]
    if given:
        raise BenchError(f"{', '.join(given)} cannot be combined with --models")
    if args.layout == "tokens":
        raise BenchError("--layout tokens does not apply to --models: models take images")
    if args.fail_if_slower is not None and not args.compare:
        raise BenchError("--fail-if-slower needs --compare RESULTS_JSON")

    def given_or_default(key: str) -> Any:
        value = getattr(args, key)
        return getattr(MODEL_DEFAULT, key) if value is None else value

    return ModelBenchConfig(
        models=resolve_models(args.models), sizes=list(given_or_default("sizes")),
        batches=list(args.batch or MODEL_DEFAULT.batches), dtype=given_or_default("dtype"),
        device=args.device, backward=args.backward, compile=args.compile, layout=args.layout,
        min_time=given_or_default("min_time"), min_runs=given_or_default("min_runs"),
        max_case_seconds=given_or_default("max_case_seconds"),
        max_memory_gb=args.max_memory_gb, time_budget=given_or_default("time_budget"),
        threads=args.threads, runtime=args.runtime,
    )  # fmt: skip


def runner_for(config: BenchConfig, started: float) -> Runner:
    """The runner of a layer run, or of whole models for a ModelBenchConfig."""
    if isinstance(config, ModelBenchConfig):
        return make_model_runner(config, started)
    return make_runner(config, started)


@contextlib.contextmanager
def progress_bar(console: Console) -> Iterator[Any]:
    """An on_case callback that drives a rich progress bar on stderr (off when not a tty)."""
    columns = (
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()
    )  # fmt: skip
    with Progress(*columns, console=console, transient=True,
                  disable=not console.is_terminal) as progress:  # fmt: skip
        task = progress.add_task("bench", total=None)

        def on_case(index: int, total: int, name: str, size: tuple[int, int]) -> None:
            desc = f"{name} {size[0]}x{size[1]}"
            progress.update(task, completed=index, total=total, description=desc)

        yield on_case


def run(args: argparse.Namespace, started: float) -> int:
    """Run `lightattn bench`; the exit code (1 when --fail-if-slower trips)."""
    config, preset = config_from(args)
    old = compare.load_results(args.compare) if args.compare else None
    out_dir = prepare_out(args.out) if args.out else None
    runner = runner_for(config, started)
    err = pipe_width(Console(stderr=True))
    with progress_bar(err) as on_case:
        result = run_benchmark(config, on_case, runner)
    if old is not None:
        attach_compare(result, old, args.compare, err)
    if preset is not None:
        result.extras["preset"] = preset_summary(result, preset)
    show(result, preset, args, err)
    if out_dir is not None:
        try:
            paths = report.write_outputs(result, out_dir, args.wide)
        except OSError as error:
            raise BenchError(f"--out {out_dir}: cannot write: {error}") from None
        err.print("wrote " + ", ".join(str(p) for p in paths), highlight=False)
    return fail_code(result, args.fail_if_slower, old, err)


def prepare_out(path: str) -> Path:
    """Create the --out directory before the run (BenchError when it cannot be written)."""
    out = Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise BenchError(f"--out {path}: cannot create directory: {error}") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise BenchError(f"--out {path}: directory is not writable")
    return out


def attach_compare(result: BenchResult, old: dict[str, Any], path: str, err: Console) -> None:
    """Ratios against the earlier run; warn when its settings differ or nothing matched."""
    count = compare.apply_compare(result.rows, old)
    diffs = compare.setting_differences(result.config, old)
    if diffs:
        err.print("warning: --compare run used other settings: " + "; ".join(diffs),
                  highlight=False)  # fmt: skip
    if count == 0:
        case = "(model, batch, size)" if is_models(result) else "(mechanism, size)"
        err.print(f"warning: --compare matched no {case} of this run", highlight=False)
    result.extras["compare"] = {"file": path, "matched": count}


def show(
    result: BenchResult, preset: Preset | None, args: argparse.Namespace, err: Console
) -> None:
    """The table (stdout, or stderr with --json) and the JSON (stdout with --json)."""
    as_json = args.json
    out = err if as_json else pipe_width(Console(file=sys.stdout))
    report.print_table(result, out, args.wide)
    if preset is not None:
        diffs = differences(result.config, preset)
        if diffs:
            err.print(f"warning: not the published {preset.name} setting: " + "; ".join(diffs),
                      highlight=False)  # fmt: skip
        out.print(preset_table(result, preset))
    if as_json:
        sys.stdout.write(report.to_json(result) + "\n")
        sys.stdout.flush()


def pipe_width(console: Console) -> Console:
    """The console, 160 columns wide when it writes to a file or pipe (no terminal width)."""
    if not console.is_terminal:
        console.width = max(console.width, 160)
    return console


def fail_code(
    result: BenchResult, pct: float | None, old: dict[str, Any] | None, err: Console
) -> int:
    """1 when --fail-if-slower PCT is set and some case slowed down by more than PCT %, or
    was measured in the earlier run but is skipped or failed in this one."""
    if pct is None or old is None:
        return 0
    code = 0
    lost = compare.lost_cases(result.rows, old)
    if lost:
        cases = "; ".join(f"{r.case} {r.status}: {r.note}" for r in lost)
        err.print(f"measured in the earlier run, not in this one: {cases}", highlight=False)
        code = 1
    slower = compare.slower_than(result.rows, old, pct)
    if slower:
        cases = ", ".join(f"{r.case} {r.compare_ratio:.2f}×" for r in slower)
        err.print(f"slower by more than {pct:g}% and beyond the runs' spread: {cases}",
                  highlight=False)  # fmt: skip
        code = 1
    return code
