"""`lightattn tamper predict|eval|synth|train|robustness|bench|serve`.

Exit codes: 0 success; 1 when `predict` could not read some input files (the others are
still written; each bad file gets one line on stderr); 2 for a usage error (one line on
stderr): bad options, no checkpoint, an output that would overwrite an input, `serve`
without its web packages.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .args import UsageError, positive_int

SUBCOMMANDS = ("predict", "eval", "synth", "train", "robustness", "bench", "serve")

PREDICT_EXAMPLES = """examples:
  lightattn tamper predict photo.jpg more/*.png --out masks/
  lightattn tamper predict big.tif --out masks/ --checkpoint runs/tamper/model.safetensors
exit codes: 0 all files done; 1 some files could not be read (the others are written);
  2 usage error (no checkpoint, output would overwrite an input, ...)
"""


def add_tamper_parser(sub: argparse._SubParsersAction) -> None:
    """Register `tamper` and its sub-commands on the top-level sub-parsers."""
    p = sub.add_parser(
        "tamper", help="tamper localization: " + ", ".join(SUBCOMMANDS),
        description="Localize manipulated pixels (stdc_tamper network).",
    )  # fmt: skip
    tsub = p.add_subparsers(
        dest="tamper_command", metavar="{" + ",".join(SUBCOMMANDS) + "}", parser_class=type(p)
    )
    add_predict_parser(tsub)
    add_eval_parser(tsub)
    add_synth_parser(tsub)
    add_train_parser(tsub)
    add_robustness_parser(tsub)
    add_bench_parser(tsub)
    add_serve_parser(tsub)


def _checkpoint_help() -> str:
    return "a tamper .safetensors (default: the checkpoint shipped with the package)"


def add_predict_parser(tsub: argparse._SubParsersAction) -> None:
    p = tsub.add_parser(
        "predict", help="mask + overlay PNG and an image score per file",
        description="Write <stem>_mask.png (probability x 255, the input's size), "
        "<stem>_overlay.png and scores.csv for each image file.",
        epilog=PREDICT_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    p.add_argument(
        "files",
        nargs="+",
        metavar="FILE",
        help="images (JPEG/PNG/TIFF/BMP/WebP) or videos (MP4/AVI)",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")
    p.add_argument("--checkpoint", metavar="PATH", help=_checkpoint_help())
    p.add_argument(
        "--max-side", type=positive_int, default=2048, metavar="N",
        help="images with a longer side run in overlapping N x N tiles (default 2048)",
    )  # fmt: skip
    p.add_argument("--batch-size", type=positive_int, default=1, help="tiles per forward")
    p.add_argument("--threads", type=positive_int, help="torch threads (default: torch's)")


def add_eval_parser(tsub: argparse._SubParsersAction) -> None:
    p = tsub.add_parser(
        "eval", help="pixel F1/IoU/AUC on a real data set beside the published CASIA v1 rows"
    )
    p.add_argument("--data", required=True, metavar="DIR", help="Tp/+Gt/, CASIA, Columbia...")
    p.add_argument("--checkpoint", metavar="PATH", help=_checkpoint_help())
    p.add_argument("--out", metavar="DIR", help="write eval.md and eval.json here")
    p.add_argument("--max-side", type=positive_int, default=2048, metavar="N")
    p.add_argument("--threads", type=positive_int, help="torch threads (default: torch's)")
    p.add_argument(
        "--figure", metavar="PNG",
        help="also draw image | ground truth | probability | overlay rows, spread over the "
        "F1 ranking (best to worst), into this PNG",
    )  # fmt: skip
    p.add_argument("--figure-rows", type=positive_int, default=5, metavar="N")


def add_robustness_parser(tsub: argparse._SubParsersAction) -> None:
    from ..tamper.robustness import PERTURBATIONS

    levels = "; ".join(
        f"{n}: {', '.join(f'{v:g}' for v in q.levels)}" for n, q in PERTURBATIONS.items()
    )
    p = tsub.add_parser(
        "robustness", help="pixel F1/AUC vs JPEG quality, blur, noise and resize",
        description="Degrade the test images (never the model) and score each level with "
        f"the eval metrics. Levels: {levels}. Resize is scored at the degraded size "
        "(ground truth resized with nearest). Writes robustness.json, .csv and .png.",
    )  # fmt: skip
    p.add_argument("--data", required=True, metavar="DIR", help="Tp/+Gt/, CASIA, Columbia...")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")
    p.add_argument("--checkpoint", metavar="PATH", help=_checkpoint_help())
    p.add_argument(
        "--only", nargs="+", choices=sorted(PERTURBATIONS), metavar="NAME",
        help=f"run these perturbations only ({', '.join(PERTURBATIONS)})",
    )  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="noise seed (0)")
    p.add_argument("--max-side", type=positive_int, default=2048, metavar="N")
    p.add_argument("--threads", type=positive_int, help="torch threads (default: torch's)")


def add_bench_parser(tsub: argparse._SubParsersAction) -> None:
    p = tsub.add_parser(
        "bench", help="params, GMACs, CPU latency and peak memory per position-attention inner",
        description="One row per `inner` of the position-attention module (DANet's N×N "
        "form included), the rest of the network as the default checkpoint's; latency "
        "interleaved across rows (median of --rounds). Writes efficiency.md and .json.",
    )  # fmt: skip
    p.add_argument("--out", metavar="DIR", help="write efficiency.md and efficiency.json here")
    p.add_argument("--sizes", nargs="+", type=positive_int, default=[512, 1024], metavar="S")
    p.add_argument("--threads", type=positive_int, default=2, help="torch threads (2)")
    p.add_argument("--rounds", type=positive_int, default=10, help="timed rounds (10)")
    p.add_argument("--inner", nargs="+", metavar="NAME", help="only these inners ('none': N×N)")
    p.add_argument(
        "--f1", metavar="JSON",
        help="a JSON object {inner: pixel F1} to add as a column (e.g. from trained variants)",
    )  # fmt: skip
    p.add_argument("--f1-label", default=None, help="that column's title (pixel F1 (CASIA))")


def add_serve_parser(tsub: argparse._SubParsersAction) -> None:
    p = tsub.add_parser(
        "serve", help="a local web page: drop an image, see the mask overlay and score",
        description="Serve a page at http://HOST:PORT/ (needs fastapi, uvicorn and "
        "python-multipart). Stop with Ctrl-C.",
    )  # fmt: skip
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    p.add_argument("--port", type=port_number, default=8000, help="port (8000)")
    p.add_argument("--checkpoint", metavar="PATH", help=_checkpoint_help())
    p.add_argument("--max-side", type=positive_int, default=2048, metavar="N")
    p.add_argument("--threads", type=positive_int, help="torch threads (default: torch's)")


def port_number(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port {value} must be in 0..65535")
    return value


def add_synth_parser(tsub: argparse._SubParsersAction) -> None:
    p = tsub.add_parser("synth", help="write a synthetic training set (Tp/, Gt/, manifest.csv)")
    p.add_argument(
        "--photos", metavar="DIR",
        help="source photographs (default: scikit-image's and scikit-learn's bundled ones)",
    )  # fmt: skip
    p.add_argument("--n", type=positive_int, required=True, help="number of samples")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=positive_int, default=512, help="sample side (512)")
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.add_argument(
        "--workers", type=positive_int, default=1,
        help="processes writing samples (same files for any number; 1)",
    )  # fmt: skip


def add_train_parser(tsub: argparse._SubParsersAction) -> None:
    p = tsub.add_parser("train", help="train stdc_tamper on a Tp/+Gt/ set (resumable)")
    p.add_argument("--data", required=True, metavar="DIR")
    p.add_argument("--out", required=True, metavar="DIR", help="run directory")
    p.add_argument("--variant", default="stdc1", choices=("stdc1", "stdc2"))
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--inner", default="mhsa", help="PAM inner mechanism ('none': DANet's own)")
    p.add_argument("--img-size", type=positive_int, default=384)
    p.add_argument("--epochs", type=positive_int, default=10)
    p.add_argument("--batch-size", type=positive_int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--warmup-epochs", type=float, default=0.5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=positive_int, default=None)
    p.add_argument("--amp", choices=("none", "bf16", "fp16"), default="none")
    p.add_argument("--checkpoint-every", type=int, default=0, help="steps (0: each epoch)")
    p.add_argument("--max-steps", type=positive_int, default=None)
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--detail-weight", type=float, default=1.0)
    p.add_argument("--score-weight", type=float, default=0.2)
    p.add_argument(
        "--noise", action="store_true",
        help="also feed the backbone three fixed SRM noise residuals (6 input channels)",
    )  # fmt: skip
    p.add_argument(
        "--init", metavar="FILE",
        help="start from these weights (tensors that fit; e.g. a trained model with another "
        "--inner: only the attention starts fresh)",
    )  # fmt: skip
    p.add_argument(
        "--init-skip", metavar="PREFIX", action="append", default=[],
        help="with --init: leave tensors whose names start with PREFIX fresh (repeatable; "
        "'position.' restarts the attention module)",
    )  # fmt: skip
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")


def resolve_checkpoint(arg: str | None, command: str) -> Path:
    """--checkpoint, else the shipped default; UsageError when neither exists."""
    if arg:
        return Path(arg)
    from ..tamper.predict import default_checkpoint

    path = default_checkpoint()
    if path is None:
        raise UsageError(
            f"lightattn tamper {command}: error: no default checkpoint is shipped yet; "
            "pass --checkpoint PATH (a .safetensors written by lightattn tamper train)"
        )
    return path


def load_model(arg: str | None, command: str, threads: int | None):
    """The network of the checkpoint, on the CPU in eval mode."""
    return load_model_meta(arg, command, threads)[0]


def load_model_meta(arg: str | None, command: str, threads: int | None):
    """(network of the checkpoint on the CPU in eval mode, its metadata)."""
    import torch

    from ..tamper.checkpoint import load_tamper_model

    if threads:
        torch.set_num_threads(threads)
    path = resolve_checkpoint(arg, command)
    try:
        return load_tamper_model(path)
    except ValueError as err:
        raise UsageError(f"lightattn tamper {command}: error: {err}") from err


def run_predict(args: argparse.Namespace) -> int:
    from ..tamper.predict import predict_files

    model = load_model(args.checkpoint, "predict", args.threads)
    try:
        results = predict_files(model, args.files, args.out, args.max_side, args.batch_size)
    except ValueError as err:
        raise UsageError(f"lightattn tamper predict: error: {err}") from err
    ok = [r for r in results if "error" not in r]
    for r in ok:
        print(f"{r['name']}\tscore {r['score']:.3f}\ttampered {r['tampered_fraction']:.1%}")
    failed = len(results) - len(ok)
    sys.stderr.write(
        f"wrote {len(ok)} masks and {Path(args.out) / 'scores.csv'}"
        + (f"; {failed} file(s) skipped\n" if failed else "\n")
    )
    return 1 if failed else 0


def run_eval(args: argparse.Namespace) -> int:
    from ..tamper import evaluate as ev

    model = load_model(args.checkpoint, "eval", args.threads)
    try:
        preds, seconds = ev.predict_dataset(model, args.data, args.max_side)
    except ValueError as err:
        raise UsageError(f"lightattn tamper eval: error: {err}") from err
    result = dict(ev.metrics_of(preds), data=str(args.data), seconds=seconds)
    result["img_per_s"] = len(preds) / seconds if seconds > 0 else float("nan")
    label = f"stdc_tamper ({_checkpoint_name(args.checkpoint)})"
    print(ev.markdown_table(result, label), end="")
    if args.out:
        md = ev.write_report(result, args.out, label)
        sys.stderr.write(f"wrote {md} and {md.with_suffix('.json')}\n")
    if args.figure:
        title = (
            f"{label} on {Path(args.data).name}: mean pixel F1 {result['f1']:.3f} over "
            f"{int(result['n_tampered'])} images; rows spread over the F1 ranking"
        )
        try:
            png = ev.prediction_figure(preds, args.figure, args.figure_rows, title)
        except ValueError as err:
            raise UsageError(f"lightattn tamper eval: error: {err}") from err
        sys.stderr.write(f"wrote {png}\n")
    return 0


def _checkpoint_name(arg: str | None) -> str:
    return Path(arg).name if arg else "default"


def run_robustness(args: argparse.Namespace) -> int:
    from ..tamper.robustness import robustness, write_robustness

    model = load_model(args.checkpoint, "robustness", args.threads)
    try:
        result = robustness(model, args.data, args.only, args.max_side, args.seed)
    except ValueError as err:
        raise UsageError(f"lightattn tamper robustness: error: {err}") from err
    result["checkpoint"] = _checkpoint_name(args.checkpoint)
    title = (f"stdc_tamper ({result['checkpoint']}) on {Path(args.data).name}, "
             f"{result['n_images']} images")  # fmt: skip
    paths = write_robustness(result, args.out, title)
    clean = result["clean"]
    print(f"clean\tF1 {clean['f1']:.3f}\tAUC {clean['auc']:.3f}")
    for name, curve in result["curves"].items():
        cells = "  ".join(f"{r['level']:g}: {r['f1']:.3f}" for r in curve)
        print(f"{name}\tF1 {cells}")
    sys.stderr.write("wrote " + ", ".join(str(p) for p in paths) + "\n")
    return 0


def run_bench(args: argparse.Namespace) -> int:
    from ..tamper import efficiency as eff

    variants = eff.default_variants()
    if args.inner:
        wanted = [eff.DANET_LABEL if n.lower() == "none" else n for n in args.inner]
        unknown = sorted(set(wanted) - {v.label for v in variants})
        if unknown:
            known = ["none"] + [v.label for v in variants if v.label != eff.DANET_LABEL]
            raise UsageError(f"lightattn tamper bench: error: unknown --inner {unknown}; "
                             f"known: {known}")  # fmt: skip
        variants = [v for v in variants if v.label in wanted]
    f1 = _read_f1(args.f1) if args.f1 else None
    try:
        result = eff.measure(variants, args.sizes, args.threads, args.rounds)
    except ValueError as err:
        raise UsageError(f"lightattn tamper bench: error: {err}") from err
    if f1:
        eff.add_f1(
            result,
            {eff.DANET_LABEL if k.lower() == "none" else k: v for k, v in f1.items()},
            args.f1_label,
        )
    print(eff.markdown_table(result), end="")
    if args.out:
        md = eff.write_efficiency(result, args.out, f"Command: `{bench_command(args)}`")
        sys.stderr.write(f"wrote {md} and {md.with_suffix('.json')}\n")
    return 0


def bench_command(args: argparse.Namespace) -> str:
    """The `lightattn tamper bench` command line that reproduces this run."""
    parts = ["lightattn tamper bench", f"--threads {args.threads}", f"--rounds {args.rounds}",
             "--sizes " + " ".join(str(s) for s in args.sizes)]  # fmt: skip
    if args.inner:
        parts.append("--inner " + " ".join(args.inner))
    if args.f1:
        parts.append(f"--f1 {args.f1}")
    if args.f1_label:
        parts.append(f"--f1-label '{args.f1_label}'")
    return " ".join(parts + [f"--out {args.out}"])


def _read_f1(path: str) -> dict[str, float]:
    """--f1 JSON: an object of inner -> number; UsageError otherwise."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise UsageError(f"lightattn tamper bench: error: --f1 {path}: {err}") from err
    ok = isinstance(data, dict) and all(isinstance(v, (int, float)) for v in data.values())
    if not ok:
        raise UsageError(f"lightattn tamper bench: error: --f1 {path} must map inner -> number")
    return {str(k): float(v) for k, v in data.items()}


def run_serve(args: argparse.Namespace) -> int:
    from ..tamper import serve as web

    try:
        web.require()
    except ImportError as err:
        raise UsageError(f"lightattn tamper serve: error: {err}") from err
    model, meta = load_model_meta(args.checkpoint, "serve", args.threads)
    sys.stderr.write(f"lightattn tamper serve: http://{args.host}:{args.port}/ (Ctrl-C stops)\n")
    web.serve(model, args.host, args.port, args.max_side, meta.get("model"))
    return 0


def run_synth(args: argparse.Namespace) -> int:
    from ..tamper.synth import write_synthetic_set

    try:
        manifest = write_synthetic_set(
            args.photos, args.n, args.out, args.seed, args.size, args.val_fraction, args.workers
        )
    except ValueError as err:
        raise UsageError(f"lightattn tamper synth: error: {err}") from err
    sys.stderr.write(f"wrote {args.n} samples under {args.out} ({manifest})\n")
    return 0


def run_train(args: argparse.Namespace) -> int:
    try:
        from ..tamper.train import TamperTrainConfig, train_tamper
    except ImportError as err:
        raise UsageError(f"lightattn tamper train: error: not available: {err}") from err
    inner = None if args.inner.lower() == "none" else args.inner
    try:
        cfg = TamperTrainConfig(
            data=args.data, out=args.out, variant=args.variant, width=args.width, inner=inner,
            img_size=args.img_size, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
            weight_decay=args.weight_decay, warmup_epochs=args.warmup_epochs, seed=args.seed,
            threads=args.threads, amp=args.amp, checkpoint_every=args.checkpoint_every,
            max_steps=args.max_steps, progress=not args.no_progress, device=args.device,
            detail_weight=args.detail_weight, score_weight=args.score_weight,
            noise=args.noise, init=args.init, init_skip=tuple(args.init_skip),
        )  # fmt: skip
        summary = train_tamper(cfg, resume=args.resume)
    except ValueError as err:
        raise UsageError(f"lightattn tamper train: error: {err}") from err
    print(json.dumps(summary, indent=2, default=str))
    return 0


def run(args: argparse.Namespace) -> int:
    """Dispatch `lightattn tamper <sub-command>`."""
    handlers = {
        "predict": run_predict, "eval": run_eval, "synth": run_synth, "train": run_train,
        "robustness": run_robustness, "bench": run_bench, "serve": run_serve,
    }  # fmt: skip
    command = getattr(args, "tamper_command", None)
    if command not in handlers:
        raise UsageError(
            "lightattn tamper: error: choose a sub-command: "
            + ", ".join(SUBCOMMANDS)
            + " (see lightattn tamper -h)"
        )
    return handlers[command](args)
