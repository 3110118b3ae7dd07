"""`lightattn shrink`: the Swin-shrinking recipe as a measured pipeline."""

from __future__ import annotations

import argparse
import json
import sys

from .args import UsageError

EXAMPLES = """examples:
  lightattn shrink runs/swin/best.safetensors --data digits \\
      --steps depth,width,resolution,attention=hilo,prune=0.3,int8 --out runs/shrink
  lightattn eval runs/shrink/final.safetensors          (the shrunk model, as eval loads it)

steps (comma-separated, applied in order; every step but int8 is followed by distillation):
  depth[=f]        keep f (0.5) of each stage's blocks, the subset with the lowest KD loss
  width[=f]        heads x f (head width kept), channels and MLP hidden channels x f (0.5),
                   the most important kept (first-order Taylor)
  resolution[=s]   input side s pixels, or x s for s < 1 (0.75)
  attention=NAME   every attention block becomes NAME (qkv/proj weights carried over)
  prune[=p]        drop p (0.3) of every attention's heads and MLP's hidden channels (Taylor)
  int8             dynamic int8 Linear weights (torch; ONNX Runtime for the ORT column); last
"""


def add_shrink_parser(sub: argparse._SubParsersAction) -> None:
    """Register `shrink` on the top-level sub-parsers."""
    p = sub.add_parser(
        "shrink", help="shrink a trained model step by step, measured",
        description="Shrink a `lightattn train` checkpoint one step at a time, fine-tuning "
        "with knowledge distillation from the original after each structural step; writes "
        "shrink.md/json/csv/png and the final model (safetensors + ONNX) under --out.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    p.add_argument("checkpoint", help="a .safetensors file written by lightattn train")
    p.add_argument("--steps", required=True, help="e.g. depth,width,resolution,prune=0.3,int8")
    p.add_argument("--out", required=True, help="output directory (must not hold a run)")
    p.add_argument("--data", default=None, help="default: the data set it was trained on")
    p.add_argument("--ft-steps", type=int, default=200, help="KD steps after each step (200)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--kd-temperature", type=float, default=4.0)
    p.add_argument("--kd-alpha", type=float, default=0.7, help="weight of the soft-target term")
    p.add_argument("--calib-images", type=int, default=256, help="for importance and depth")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch/ORT threads (training, timing)")
    p.add_argument("--latency-batch", type=int, default=32)
    p.add_argument("--timing-rounds", type=int, default=3)
    p.add_argument("--no-ort", action="store_true", help="skip ONNX export and ORT timing")
    p.add_argument("--quiet", action="store_true")


def one_line(err: Exception) -> str:
    """A multi-line message (torch's state-dict mismatch list) as its first two lines and
    the count of the rest."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if len(lines) <= 1:
        return lines[0] if lines else type(err).__name__
    more = f" (and {len(lines) - 2} more)" if len(lines) > 2 else ""
    return f"{lines[0]} {lines[1]}{more}"


def run(args: argparse.Namespace) -> int:
    import torch

    from ..shrink import DistillConfig, ShrinkConfig, shrink
    from ..shrink.report import markdown

    try:
        if args.threads < 1 or args.latency_batch < 1 or args.timing_rounds < 1:
            raise ValueError(
                f"--threads, --latency-batch and --timing-rounds must be >= 1, got "
                f"{args.threads}, {args.latency_batch}, {args.timing_rounds}"
            )
        if args.calib_images < 1:
            raise ValueError(f"--calib-images={args.calib_images} must be >= 1")
        torch.set_num_threads(args.threads)
        distill = DistillConfig(
            steps=args.ft_steps, batch_size=args.batch_size, lr=args.lr,
            weight_decay=args.weight_decay, temperature=args.kd_temperature,
            alpha=args.kd_alpha, seed=args.seed,
        )  # fmt: skip
        cfg = ShrinkConfig(
            checkpoint=args.checkpoint, steps=args.steps, out=args.out, data=args.data,
            distill=distill, calib_images=args.calib_images, latency_batch=args.latency_batch,
            threads=args.threads, timing_rounds=args.timing_rounds, ort=not args.no_ort,
            seed=args.seed, log=not args.quiet,
        )  # fmt: skip
        result = shrink(cfg)
    except ValueError as err:
        raise UsageError(f"lightattn shrink: error: {one_line(err)}") from err
    print(markdown(result))
    sys.stderr.write(f"wrote {args.out}/shrink.md, shrink.json, shrink.csv, shrink.png\n")
    if result["final"]["files"]:
        sys.stderr.write(json.dumps(result["final"]["files"]) + "\n")
    return 0
