"""Argument parsing: the parser, and the value types of sizes and --kwargs."""

from __future__ import annotations

import argparse
import ast
import math
import re
from typing import Any, NoReturn

from ..bench.machine import DTYPES
from ..bench.ort import RUNTIMES
from ..bench.presets import PRESETS
from ..bench.results import LAYOUTS, BenchConfig, ModelBenchConfig

DEFAULT = BenchConfig()
MODEL_DEFAULT = ModelBenchConfig()

SIZE_RE = re.compile(r"^\s*(-?\d+)\s*(?:[xX×]\s*(-?\d+))?\s*$")
LABEL_RE = re.compile(r"^[^\s:=]+$")


class UsageError(Exception):
    """A bad command line; main prints its one-line message and exits 2."""


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are exceptions (one line, no usage dump)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: error: {message}")


def parse_size(text: str) -> tuple[int, int]:
    """ "S" -> (S, S); "HxW" -> (H, W); both positive."""
    match = SIZE_RE.match(text)
    if not match:
        raise argparse.ArgumentTypeError(
            f"size {text!r} must be S (meaning S×S) or HxW, e.g. 13x19"
        )
    h = int(match.group(1))
    w = int(match.group(2)) if match.group(2) is not None else h
    if h <= 0 or w <= 0:
        raise argparse.ArgumentTypeError(f"size {text!r} must be positive (H, W >= 1)")
    return h, w


def parse_literal(text: str) -> Any:
    """A Python literal (int, float, bool, None, tuple...); true/false in any case; else the
    text itself as a string."""
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_kwarg(text: str) -> tuple[str, str, Any]:
    """ "name:key=value" -> (name, key, value)."""
    name, sep, rest = text.partition(":")
    key, eq, value = rest.partition("=")
    if not sep or not eq or not name.strip() or not key.strip().isidentifier():
        raise argparse.ArgumentTypeError(
            f"--kwargs {text!r} must look like name:key=value, e.g. window:window_size=7"
        )
    return name.strip(), key.strip(), parse_literal(value.strip())


def parse_variant(text: str) -> tuple[str, str]:
    """ "LABEL=NAME" -> (LABEL, NAME): a row labelled LABEL built from mechanism NAME."""
    label, eq, name = (part.strip() for part in text.partition("="))
    if not eq or not LABEL_RE.match(label) or not name:
        raise argparse.ArgumentTypeError(
            f"--variant {text!r} must look like LABEL=NAME, e.g. window8=window "
            "(LABEL without spaces, ':' or '=')"
        )
    return label, name


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive integer")
    return value


def non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number")
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be >= 0")
    return value


def positive_float(text: str) -> float:
    value = non_negative_float(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be > 0")
    return value


def add_bench_arguments(p: argparse.ArgumentParser) -> None:
    """The options of `lightattn bench` (defaults None where a preset may fill them)."""
    what = p.add_argument_group("what to run")
    what.add_argument(
        "--attn",
        nargs="+",
        metavar="NAME",
        help="mechanisms (or variant labels) to run (default: all registered and the default "
        "variant window+shift; mhsa is always added as the baseline)",
    )
    what.add_argument(
        "--models",
        nargs="+",
        metavar="NAME",
        help="time whole named models instead of layers (`all`: every one of "
        "`lightattn models`), at each --batch and --sizes (default: batch "
        + " ".join(str(b) for b in MODEL_DEFAULT.batches)
        + ", size "
        + " ".join(f"{h}x{w}" for h, w in MODEL_DEFAULT.sizes)
        + ")",
    )
    what.add_argument(
        "--sizes",
        nargs="+",
        type=parse_size,
        metavar="SIZE",
        help="map sizes (image sizes with --models): S (S×S) or HxW (default: "
        + " ".join(f"{h}x{w}" for h, w in DEFAULT.sizes)
        + ")",
    )
    what.add_argument("--dim", type=positive_int, help=f"channels C (default {DEFAULT.dim})")
    what.add_argument(
        "--heads",
        type=positive_int,
        help="heads (default: the library's, dim // 32 when 32 divides dim, else 1)",
    )
    what.add_argument(
        "--batch",
        type=positive_int,
        nargs="+",
        help=f"batch size (default {DEFAULT.batch}); with --models one or more",
    )
    what.add_argument("--dtype", choices=list(DTYPES), help=f"default {DEFAULT.dtype}")
    what.add_argument("--device", choices=["cpu", "cuda"], default=DEFAULT.device)
    what.add_argument(
        "--layout",
        choices=list(LAYOUTS),
        default=DEFAULT.layout,
        help="input: nchw = contiguous (B, C, H, W) (default); channels_last = the same "
        "tensor in channels_last memory; tokens = (B, N, C) with hw",
    )
    what.add_argument(
        "--backward",
        action="store_true",
        help="time forward+backward of out.sum() in train mode, at training-time cost: "
        "castling runs (and its MACs count) its training-only O(N²) aux branch",
    )
    what.add_argument("--compile", action="store_true", help="torch.compile each module")
    what.add_argument(
        "--runtime",
        choices=list(RUNTIMES),
        default=DEFAULT.runtime,
        help="eager (default), or onnxruntime: also time each case in onnxruntime (CPU, fp32, "
        "forward; each mechanism or model exported once with dynamic batch, H and W)",
    )
    what.add_argument(
        "--kwargs",
        action="append",
        type=parse_kwarg,
        default=[],
        metavar="NAME:KEY=VALUE",
        help="constructor argument for one mechanism (repeatable); values are Python literals",
    )
    what.add_argument(
        "--variant",
        action="append",
        type=parse_variant,
        default=[],
        metavar="LABEL=NAME",
        help="an extra row LABEL built from mechanism NAME with the --kwargs LABEL:key=value "
        "given (repeatable; always run, also with --attn); the default run has window+shift "
        "(window, shift=True)",
    )
    what.add_argument(
        "--preset",
        choices=list(PRESETS),
        help="a published comparison's settings (explicit options override)",
    )
    how = p.add_argument_group("measurement")
    how.add_argument(
        "--min-time",
        type=non_negative_float,
        metavar="S",
        help=f"time each case for at least S seconds (default {DEFAULT.min_time:g}; "
        "a preset's own: 2)",
    )
    how.add_argument(
        "--min-runs",
        type=positive_int,
        metavar="K",
        help=f"at least K timed runs (default {DEFAULT.min_runs})",
    )
    how.add_argument(
        "--no-reference", action="store_true", help="do not time the reference (naive) path"
    )
    how.add_argument(
        "--max-case-seconds",
        type=positive_float,
        metavar="S",
        help="skip a case estimated to take longer than S s "
        f"(default {DEFAULT.max_case_seconds:g}; a preset's own: 60; "
        f"--models: {MODEL_DEFAULT.max_case_seconds:g})",
    )
    how.add_argument(
        "--max-memory-gb",
        type=positive_float,
        default=DEFAULT.max_memory_gb,
        metavar="GB",
        help=f"skip a case estimated to allocate more (default {DEFAULT.max_memory_gb:g})",
    )
    how.add_argument(
        "--time-budget",
        type=non_negative_float,
        metavar="S",
        help="skip the cases that no longer fit in S s of total run time; "
        f"0 = no budget (default {DEFAULT.time_budget:g}; a preset's own: 600; "
        f"--models: {MODEL_DEFAULT.time_budget:g})",
    )
    how.add_argument(
        "--threads", type=positive_int, help="torch threads (default: as torch finds them)"
    )
    out = p.add_argument_group("output")
    out.add_argument("--json", action="store_true", help="results as JSON on stdout")
    out.add_argument(
        "--out",
        metavar="DIR",
        help="write results.csv, results.json, results.md, latency.png, memory.png "
        "(no plots with --models)",
    )
    out.add_argument(
        "--compare",
        metavar="RESULTS_JSON",
        help="show the time ratio new/old against an earlier results.json",
    )
    out.add_argument(
        "--fail-if-slower",
        type=non_negative_float,
        metavar="PCT",
        help="with --compare: exit 1 when a case is slower beyond noise: its median over "
        "the old median by more than PCT %% and over the old slowest run, and its fastest "
        "run over the old median; or measured before and skipped now",
    )
    out.add_argument("--wide", action="store_true", help="all columns in the table and results.md")
    # fmt: skip


def build_parser() -> Parser:
    """`lightattn` with its subcommands bench, list, models, train, eval, compare, tamper,
    export and shrink."""
    parser = Parser(prog="lightattn", description="Lightweight self-attention for vision.")
    sub = parser.add_subparsers(
        dest="command",
        metavar="{bench,list,models,train,eval,compare,tamper,export,shrink}",
        parser_class=Parser,
    )
    bench = sub.add_parser(
        "bench",
        help="benchmark the registered mechanisms (or whole models: --models)",
        description="Benchmark latency, memory and throughput.",
    )
    add_bench_arguments(bench)
    listing = sub.add_parser("list", help="the registered mechanisms and their default settings")
    listing.add_argument("--dim", type=positive_int, default=64)
    listing.add_argument(
        "--heads", type=positive_int, help="heads (default: the library's, dim // 32 or 1)"
    )
    listing.add_argument("--json", action="store_true")
    models = sub.add_parser(
        "models", help="the named backbones: params, GMACs, published figures, img/s here"
    )
    models.add_argument("names", nargs="*", metavar="NAME", help="models (default: all)")
    models.add_argument("--size", type=positive_int, default=224, help="image side (224)")
    models.add_argument(
        "--batch", type=positive_int, nargs="+", default=[1, 32], help="batch sizes (1 32)"
    )
    models.add_argument("--no-time", action="store_true", help="sizes only, no timing")
    models.add_argument("--min-runs", type=positive_int, default=3)
    models.add_argument("--min-time", type=positive_float, default=1.0)
    models.add_argument("--threads", type=positive_int, help="torch threads (default: torch's)")
    models.add_argument("--json", action="store_true")
    from . import train_cmd  # it imports UsageError from here

    train_cmd.add_train_parser(sub)
    train_cmd.add_eval_parser(sub)
    train_cmd.add_compare_parser(sub)
    from . import tamper_cmd

    tamper_cmd.add_tamper_parser(sub)
    from . import export_cmd, shrink_cmd

    export_cmd.add_export_parser(sub)
    shrink_cmd.add_shrink_parser(sub)
    return parser
