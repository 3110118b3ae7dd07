"""`lightattn export`: ONNX export of a mechanism, a named model or the tamper network, then
a check in onnxruntime at three sizes (max |ORT - eager| and latency beside eager)."""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .args import UsageError, parse_literal, parse_size, positive_int

PROG = "lightattn export"
TOLERANCE = 1e-4  # max |ORT - eager| of an fp32 export
LAYER_SIZE, MODEL_SIZE = (14, 14), 224
# verified besides the export size: non-square, not divisible by 4 or 7; the smallest kind
LAYER_SIZES, NETWORK_SIZES = [(13, 19), (3, 2)], [(75, 101), (33, 47)]
EXAMPLES = """examples:
  lightattn export window --dim 64 --heads 2 --kwargs window_size=7 shift=True --out w.onnx
  lightattn export --model litv2_s --checkpoint runs/x/best.safetensors --out m.onnx --int8
  lightattn export --model swin --out s.onnx \\
      --model-kwargs embed_dim=32,depths=2,2,2,2,num_heads=1,2,4,8,attn=mhsa
  lightattn export --tamper --out tamper.onnx          (the shipped checkpoint)
"""


def add_export_parser(sub: argparse._SubParsersAction) -> None:
    """Register `export` on the top-level sub-parsers."""
    p = sub.add_parser(
        "export", help="ONNX export with dynamic batch, H and W, checked in ORT",
        description="Export to ONNX (dynamic batch, H and W), then compare onnxruntime with "
        "eager PyTorch at the export size and two others; exit 1 when an output differs by "
        f"more than {TOLERANCE:g}.", epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    what = p.add_argument_group("what to export (one of)")
    what.add_argument("attn", nargs="?", metavar="NAME", help="a mechanism (lightattn list)")
    what.add_argument("--model", help="a named model or family (lightattn models)")
    what.add_argument("--tamper", action="store_true", help="the tamper network (stdc_tamper)")
    layer = p.add_argument_group("a mechanism")
    layer.add_argument("--dim", type=positive_int, default=64, help="channels C (64)")
    layer.add_argument("--heads", type=positive_int, help="heads (default: the library's)")
    layer.add_argument(
        "--kwargs", nargs="+", action="extend", default=[], type=parse_pair,
        metavar="KEY=VALUE", help="constructor arguments (Python literals)",
    )  # fmt: skip
    net = p.add_argument_group("a model or the tamper network")
    net.add_argument("--model-kwargs", default="", help="key=value,... (as lightattn train)")
    net.add_argument(
        "--checkpoint", help="weights: a lightattn train checkpoint (the model is rebuilt "
        "from it), or with --tamper a tamper checkpoint (default: the shipped one)",
    )  # fmt: skip
    net.add_argument("--img-size", type=positive_int, help=f"export size N×N ({MODEL_SIZE})")
    out = p.add_argument_group("output")
    out.add_argument("--out", required=True, help="the .onnx file to write")
    out.add_argument("--size", type=parse_size, help="export size HxW (mechanism: 14x14)")
    out.add_argument("--batch", type=positive_int, default=2, help="export batch (2)")
    out.add_argument("--opset", type=int, default=18, help="ONNX opset (18)")
    out.add_argument(
        "--int8", action="store_true",
        help="also write <out stem>.int8.onnx (dynamic int8 MatMul/Gemm weights); its "
        "differences are shown, not checked",
    )  # fmt: skip
    out.add_argument("--threads", type=positive_int, help="torch and ORT threads")
    out.add_argument("--min-time", type=float, default=0.2, help="seconds timed per case")


def parse_pair(text: str) -> tuple[str, Any]:
    """ "key=value" -> (key, Python literal)."""
    key, eq, value = text.partition("=")
    if not eq or not key.strip().isidentifier():
        raise argparse.ArgumentTypeError(f"--kwargs {text!r} must look like key=value")
    return key.strip(), parse_literal(value.strip())


@dataclass
class Target:
    """What is exported: the module, its input channels, the export size, the sizes it is
    verified at, the ONNX output names and a one-line description."""

    module: Any
    channels: int
    size: tuple[int, int]
    sizes: list[tuple[int, int]]
    names: list[str] | None
    label: str


def usage(message: str, limit: int = 300) -> UsageError:
    """The one-line error of a bad input (a long, multi-line message joined and cut)."""
    text = " ".join(message.split())
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    return UsageError(f"{PROG}: error: {text}")


def check_choice(args: argparse.Namespace) -> str:
    """Which of mechanism / model / tamper is asked for (UsageError unless exactly one)."""
    chosen = [
        kind
        for kind, given in (
            ("attn", args.attn is not None),
            ("model", args.model is not None or (args.checkpoint and not args.tamper)),
            ("tamper", args.tamper),
        )
        if given
    ]
    if len(chosen) != 1:
        raise usage("give one of NAME (a mechanism), --model (or --checkpoint) or --tamper")
    kind = chosen[0]
    if kind == "attn" and (args.model_kwargs or args.checkpoint or args.img_size):
        raise usage("--model-kwargs, --checkpoint and --img-size go with --model or --tamper")
    if kind != "attn" and args.kwargs:
        raise usage("--kwargs goes with a mechanism NAME; use --model-kwargs for a model")
    if args.size and args.img_size:
        raise usage("give --size or --img-size, not both")
    return kind


def other_sizes(size: tuple[int, int], candidates: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Two verification sizes besides the export size (never the export size itself)."""
    spare = [s for s in candidates if s != size]
    return [size, *spare[:2]] if len(spare) >= 2 else [size, *spare, (size[0] + 1, size[1] + 2)]


def mechanism_target(args: argparse.Namespace) -> Target:
    import torch

    import lightattn

    kwargs = dict(args.kwargs)
    torch.manual_seed(0)
    try:
        module = lightattn.create_attention(args.attn, args.dim, args.heads, **kwargs)
    except ValueError as err:
        raise usage(str(err)) from None
    size = args.size or LAYER_SIZE
    label = f"{args.attn} dim {args.dim}, {module.num_heads} heads" + "".join(
        f", {k}={v!r}" for k, v in kwargs.items()
    )
    sizes = other_sizes(size, LAYER_SIZES)
    return Target(module, args.dim, size, sizes, None, label + " (random weights)")


def parsed_model_kwargs(text: str) -> dict[str, Any]:
    from ..train.config import parse_kwargs

    try:
        return parse_kwargs(text)
    except ValueError as err:
        raise usage(f"--model-kwargs: {err}") from None


def model_target(args: argparse.Namespace) -> Target:
    """A named model or family, built (seed 0) or rebuilt from a `lightattn train`
    checkpoint as `lightattn eval` does."""
    import torch

    from ..models import create_model

    given = parsed_model_kwargs(args.model_kwargs)
    img_size = None
    if args.checkpoint:
        module, meta = load_model_checkpoint(args.checkpoint, args.model, given)
        img_size = meta["config"].get("img_size")
        label = f"{meta['config']['model']} from {args.checkpoint}"
    else:
        torch.manual_seed(0)
        try:
            module = create_model(args.model, **given)
        except ValueError as err:
            raise usage(str(err)) from None
        label = f"{args.model} (random weights)"
    side = args.img_size or img_size or MODEL_SIZE
    size = args.size or (side, side)
    channels = int(getattr(module, "in_chans", 3))
    names = feature_names(module, channels) if module.features_only else ["logits"]
    return Target(module, channels, size, other_sizes(size, NETWORK_SIZES), names, label)


def feature_names(module: Any, channels: int) -> list[str]:
    """ "features_0", ... for each map a features_only model returns (stride 4 first)."""
    import torch

    from ..export.onnx import eager_outputs

    maps = eager_outputs(module, torch.zeros(1, channels, MODEL_SIZE // 2, MODEL_SIZE // 2))
    return [f"features_{i}" for i in range(len(maps))]


def load_model_checkpoint(
    path: str, model: str | None, given: dict[str, Any]
) -> tuple[Any, dict[str, Any]]:
    """The model of a `lightattn train` checkpoint (`train.evaluate.load_checkpoint`);
    UsageError when it is unreadable or is not the --model / --model-kwargs asked for."""
    from ..train.checkpoint import open_checkpoint
    from ..train.evaluate import load_checkpoint

    try:
        header, _ = open_checkpoint(path, tensors=False)
        if "config" not in json.loads(header.get("lightattn", "{}")):
            raise ValueError(f"checkpoint {path!r} is not a lightattn train checkpoint")
        module, meta = load_checkpoint(path)
    except (ValueError, KeyError, TypeError) as err:
        raise usage(str(err)) from None
    config = meta["config"]
    saved = {**config.get("model_kwargs", {})}
    if config.get("attn") is not None:
        saved["attn"] = config["attn"]
    differ = [k for k, v in given.items() if k in saved and not same_value(saved[k], v)]
    missing = [k for k in given if k not in saved]
    if model is not None and model != config["model"] or differ or missing:
        raise usage(
            f"checkpoint {path!r} holds model {config['model']!r} with {saved or 'defaults'}; "
            f"it does not match --model {model or config['model']!r} with {given or 'defaults'}"
        )
    return module, meta


def same_value(a: Any, b: Any) -> bool:
    """Equal, lists and tuples alike (JSON turned the checkpoint's tuples into lists)."""
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def tamper_target(args: argparse.Namespace) -> Target:
    """The tamper network of --checkpoint, else of the shipped checkpoint."""
    from ..tamper.checkpoint import load_tamper_model
    from ..tamper.predict import default_checkpoint

    path = args.checkpoint or default_checkpoint()
    if path is None:
        raise usage("no tamper checkpoint is shipped with this install; give --checkpoint")
    if args.model_kwargs:
        raise usage("--model-kwargs does not apply to --tamper (the checkpoint defines it)")
    try:
        module, meta = load_tamper_model(path)
    except (ValueError, KeyError, TypeError) as err:
        raise usage(str(err)) from None
    side = args.img_size or MODEL_SIZE
    size = args.size or (side, side)
    label = f"stdc_tamper {meta.get('model', {})} from {Path(path).name}"
    return Target(module, 3, size, other_sizes(size, NETWORK_SIZES), None, label)


def build_target(args: argparse.Namespace) -> Target:
    kind = check_choice(args)
    if kind == "attn":
        return mechanism_target(args)
    if kind == "model":
        return model_target(args)
    return tamper_target(args)


@dataclass
class Check:
    """One verified size: batch, max |ORT - eager|, eager and ORT median ms."""

    batch: int
    size: tuple[int, int]
    diff: float
    eager_ms: float
    ort_ms: float


def check_sizes(path: Path, target: Target, batch: int, min_time: float) -> list[Check]:
    """ORT against eager at each of the target's sizes (batch `batch`, then 1, then 3)."""
    import torch

    from ..bench.measure import time_calls
    from ..export.onnx import eager_outputs, max_abs_diff, ort_feed, ort_session

    session = ort_session(path)
    gen = torch.Generator().manual_seed(0)
    checks = []
    for b, (h, w) in zip([batch, 1, 3], target.sizes, strict=True):
        x = torch.randn(b, target.channels, h, w, generator=gen)
        feed = ort_feed(session, x)
        diff = max_abs_diff(session.run(None, feed), eager_outputs(target.module, x))
        eager = time_calls(lambda x=x: eager_outputs(target.module, x), min_time=min_time,
                           min_runs=3)  # fmt: skip
        ort = time_calls(lambda feed=feed: session.run(None, feed), min_time=min_time,
                         min_runs=3)  # fmt: skip
        checks.append(Check(b, (h, w), diff, eager.median * 1e3, ort.median * 1e3))
    return checks


def table(title: str, checks: list[Check], tolerance: float | None) -> list[str]:
    """One line per size: batch, size, max |ORT - eager|, eager ms, ORT ms, ORT/eager."""
    lines = [title, f"{'batch':>5}  {'size':>9}  {'max|ORT-eager|':>14}  {'eager ms':>9}  "
             f"{'ORT ms':>9}  {'ORT/eager':>9}"]  # fmt: skip
    for c in checks:
        flag = "  FAIL" if tolerance is not None and not c.diff <= tolerance else ""
        lines.append(
            f"{c.batch:>5}  {c.size[0]:>4}x{c.size[1]:<4}  {c.diff:>14.3g}  {c.eager_ms:>9.3g}  "
            f"{c.ort_ms:>9.3g}  {c.ort_ms / c.eager_ms:>8.2f}×{flag}"
        )
    return lines


def int8_path(out: Path) -> Path:
    return out.with_name(out.stem + ".int8.onnx")


def run(args: argparse.Namespace) -> int:
    """Export, verify in onnxruntime, print the table; 0, or 1 when the export fails or an
    fp32 output differs from eager by more than TOLERANCE."""
    import torch

    from ..export.onnx import ExportError, check_opset, export_onnx

    try:
        check_opset(args.opset)
    except ValueError as err:
        raise usage(str(err)) from None
    if not math.isfinite(args.min_time) or args.min_time < 0:
        raise usage(f"--min-time {args.min_time!r} must be a number >= 0")
    if args.threads:
        torch.set_num_threads(args.threads)
    target = build_target(args)
    out = Path(args.out)
    if out.is_dir():
        raise usage(f"--out {args.out!r} is a directory; give a .onnx file name")
    gen = torch.Generator().manual_seed(0)
    example = torch.randn(args.batch, target.channels, *target.size, generator=gen)
    try:
        export_onnx(target.module, example, out, opset=args.opset, names=target.names)
    except ValueError as err:
        raise usage(str(err)) from None
    except ExportError as err:
        sys.stderr.write(f"{PROG}: export failed: {err}\n")
        return 1
    except OSError as err:
        raise usage(f"--out {args.out!r}: cannot write: {err}") from None
    checks = check_sizes(out, target, args.batch, args.min_time)
    title = f"{out} ({target.label}; opset {args.opset}, {torch.get_num_threads()} threads)"
    print("\n".join(table(title, checks, TOLERANCE)))
    if args.int8:
        try:
            print("\n".join(int8_lines(out, target, args)))
        except Exception as err:  # noqa: BLE001 - the fp32 file is written and checked
            message = " ".join(str(err).split())[:300]
            sys.stderr.write(f"{PROG}: int8 quantization failed: {message}\n")
            return 1
    worst = max(c.diff for c in checks)
    if not worst <= TOLERANCE:
        print(f"{PROG}: FAIL: max |ORT - eager| = {worst:.3g} > {TOLERANCE:g}")
        return 1
    return 0


def int8_lines(out: Path, target: Target, args: argparse.Namespace) -> list[str]:
    """Quantize the written file (`export.quantize.quantize_onnx_dynamic`) and check it."""
    from ..export.onnx import quiet
    from ..export.quantize import quantize_onnx_dynamic

    dst = int8_path(out)
    with quiet():
        quantize_onnx_dynamic(out, dst)
    checks = check_sizes(dst, target, args.batch, args.min_time)
    return table(f"{dst} (int8 dynamic; differences not checked)", checks, None)
