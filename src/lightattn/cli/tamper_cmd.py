"""`lightattn tamper predict|eval|synth|train`.

Exit codes: 0 success; 1 when `predict` could not read some input files (the others are
still written; each bad file gets one line on stderr); 2 for a usage error (one line on
stderr): bad options, no checkpoint, an output that would overwrite an input.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .args import UsageError, positive_int

PREDICT_EXAMPLES = """examples:
  lightattn tamper predict photo.jpg more/*.png --out masks/
  lightattn tamper predict big.tif --out masks/ --checkpoint runs/tamper/model.safetensors
exit codes: 0 all files done; 1 some files could not be read (the others are written);
  2 usage error (no checkpoint, output would overwrite an input, ...)
"""


def add_tamper_parser(sub: argparse._SubParsersAction) -> None:
    """Register `tamper` and its sub-commands on the top-level sub-parsers."""
    p = sub.add_parser(
        "tamper", help="tamper localization: predict, eval, synth, train",
        description="Localize manipulated pixels (stdc_tamper network).",
    )  # fmt: skip
    tsub = p.add_subparsers(
        dest="tamper_command", metavar="{predict,eval,synth,train}", parser_class=type(p)
    )
    add_predict_parser(tsub)
    add_eval_parser(tsub)
    add_synth_parser(tsub)
    add_train_parser(tsub)


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
    import torch

    from ..tamper.checkpoint import load_tamper_model

    if threads:
        torch.set_num_threads(threads)
    path = resolve_checkpoint(arg, command)
    try:
        model, _ = load_tamper_model(path)
    except ValueError as err:
        raise UsageError(f"lightattn tamper {command}: error: {err}") from err
    return model


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
    from ..tamper.evaluate import evaluate_model, markdown_table, write_report

    model = load_model(args.checkpoint, "eval", args.threads)
    try:
        result = evaluate_model(model, args.data, args.max_side)
    except ValueError as err:
        raise UsageError(f"lightattn tamper eval: error: {err}") from err
    label = f"stdc_tamper ({Path(args.checkpoint).name if args.checkpoint else 'default'})"
    print(markdown_table(result, label), end="")
    if args.out:
        md = write_report(result, args.out, label)
        sys.stderr.write(f"wrote {md} and {md.with_suffix('.json')}\n")
    return 0


def run_synth(args: argparse.Namespace) -> int:
    from ..tamper.synth import write_synthetic_set

    try:
        manifest = write_synthetic_set(
            args.photos, args.n, args.out, args.seed, args.size, args.val_fraction
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
    }  # fmt: skip
    command = getattr(args, "tamper_command", None)
    if command not in handlers:
        raise UsageError(
            "lightattn tamper: error: choose a sub-command: predict, eval, synth, train "
            "(see lightattn tamper -h)"
        )
    return handlers[command](args)
