"""`lightattn train` and `lightattn eval`."""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import fields
from pathlib import Path

from .args import UsageError

TRAIN_EXAMPLES = """examples:
  lightattn train --model swin --model-kwargs embed_dim=32,depths=2,2,2,2,num_heads=1,2,4,8 \\
      --attn hilo --data pathfinder --epochs 20 --out runs/hilo
  lightattn train --data path/to/imagefolder --model pvt_v2_b0 --img-size 64 --out runs/x --resume
  torchrun --nproc_per_node=2 -m lightattn train ...   (DDP: gloo on CPU, nccl on CUDA)
"""


def add_train_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="train a model (resumable, DDP under torchrun)",
        epilog=TRAIN_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    p.add_argument(
        "--data", required=True, help="imagefolder/CIFAR dir, digits, pathfinder[:6|9|14]"
    )
    p.add_argument("--out", required=True, help="run directory (checkpoints, metrics, config)")
    p.add_argument("--model", default="swin", help="named model or family (lightattn models)")
    p.add_argument("--model-kwargs", default="", help="key=value,... (tuples: depths=2,2,6,2)")
    p.add_argument("--attn", default=None, help="swap every attention stage to this mechanism")
    p.add_argument("--attn-kwargs", default="", help="key=value,... for --attn")
    p.add_argument("--img-size", type=int, default=None)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=64, help="global batch (all processes)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--min-lr", type=float, default=1e-5)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--warmup-epochs", type=float, default=1.0)
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--clip-grad", type=float, default=1.0, help="max grad norm (0: off)")
    p.add_argument("--drop-path", type=float, default=0.1, help="stochastic depth rate")
    p.add_argument("--amp", choices=("none", "bf16", "fp16"), default="none")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-seed", type=int, default=0)
    p.add_argument("--augment", choices=("default", "on", "off"), default="default")
    p.add_argument("--pathfinder-counts", default="", help="train=N,val=N,test=N")
    p.add_argument(
        "--castling-schedule", default="",
        help="aux-branch weight: cosine from start to 0 at end x steps (default start=1,end=0.75)",
    )  # fmt: skip
    p.add_argument("--checkpoint-every", type=int, default=0, help="steps (0: each epoch)")
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--tensorboard", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")


def add_eval_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="accuracy, confusion matrix and img/s of a checkpoint")
    p.add_argument("checkpoint", help="a .safetensors file written by lightattn train")
    p.add_argument("--data", default=None, help="default: the data set it was trained on")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--out", default=None, help="directory for confusion.png and eval.json")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--threads", type=int, default=None)


def config_from_args(args: argparse.Namespace):
    from ..train.config import TrainConfig, parse_kwargs

    augment = {"default": None, "on": True, "off": False}[args.augment]
    counts = parse_kwargs(args.pathfinder_counts) or None
    values = {
        "data": args.data, "out": args.out, "model": args.model,
        "model_kwargs": parse_kwargs(args.model_kwargs), "attn": args.attn,
        "attn_kwargs": parse_kwargs(args.attn_kwargs), "img_size": args.img_size,
        "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
        "min_lr": args.min_lr, "weight_decay": args.weight_decay,
        "warmup_epochs": args.warmup_epochs, "label_smoothing": args.label_smoothing,
        "clip_grad": args.clip_grad or None, "drop_path": args.drop_path, "amp": args.amp,
        "seed": args.seed, "data_seed": args.data_seed, "augment": augment,
        "pathfinder_counts": counts, "checkpoint_every": args.checkpoint_every,
        "max_steps": args.max_steps, "threads": args.threads, "device": args.device,
        "tensorboard": args.tensorboard, "progress": not args.no_progress,
        "castling_schedule": parse_kwargs(args.castling_schedule),
    }  # fmt: skip
    return TrainConfig(**{f.name: values[f.name] for f in fields(TrainConfig) if f.name in values})


def run_train(args: argparse.Namespace) -> int:
    from ..train.loop import train

    try:
        cfg = config_from_args(args)
        summary = train(cfg, resume=args.resume)
    except ValueError as err:
        raise UsageError(f"lightattn train: error: {err}") from err
    if os.environ.get("RANK", "0") == "0":
        print(json.dumps(summary, indent=2))
    return 0


def run_eval(args: argparse.Namespace) -> int:
    import torch

    from ..train.evaluate import evaluate_checkpoint

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        result = evaluate_checkpoint(
            args.checkpoint, args.data, args.split, args.out, args.batch_size
        )
    except (ValueError, KeyError) as err:
        raise UsageError(f"lightattn eval: error: {err}") from err
    shown = {k: v for k, v in result.items() if k != "confusion"}
    print(json.dumps(shown, indent=2))
    if args.out:
        sys.stderr.write(f"wrote {Path(args.out) / 'confusion.png'}\n")
    return 0


def add_compare_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare", help="every mechanism in one small backbone: accuracy vs latency",
        description="Trains the same small backbone once per mechanism (same data, steps "
        "and seed) within a shared time budget; writes compare.md/json/png under --out.",
    )  # fmt: skip
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--attn", default="all", help="'all' or a comma-separated list")
    p.add_argument("--budget-minutes", type=float, default=60.0)
    p.add_argument("--model", default="swin", help="the backbone family (default swin)")
    p.add_argument("--model-kwargs", default="", help="overrides of the small backbone")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--warmup-epochs", type=float, default=1.0)
    p.add_argument("--drop-path", type=float, default=0.0)
    p.add_argument("--label-smoothing", type=float, default=0.0)
    p.add_argument("--img-size", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pathfinder-counts", default="")
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--latency-batch", type=int, default=32)
    p.add_argument("--threads", type=int, default=None)


def run_compare(args: argparse.Namespace) -> int:
    from ..train.compare import compare
    from ..train.config import TrainConfig, parse_kwargs

    try:
        base = TrainConfig(
            data=args.data, out=args.out, model=args.model,
            model_kwargs=parse_kwargs(args.model_kwargs), epochs=args.epochs,
            batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
            warmup_epochs=args.warmup_epochs, drop_path=args.drop_path,
            label_smoothing=args.label_smoothing, img_size=args.img_size, seed=args.seed,
            pathfinder_counts=parse_kwargs(args.pathfinder_counts) or None,
            max_steps=args.max_steps, threads=args.threads, progress=False,
        )  # fmt: skip
        result = compare(base, args.attn, args.budget_minutes, args.latency_batch)
    except ValueError as err:
        raise UsageError(f"lightattn compare: error: {err}") from err
    from ..train.compare import markdown

    print(markdown(result))
    return 0


def run(args: argparse.Namespace) -> int:
    return {"train": run_train, "eval": run_eval, "compare": run_compare}[args.command](args)
