"""The `lightattn` command: parse, dispatch, and turn every expected error into one line on
stderr with exit code 2."""

from __future__ import annotations

import sys
import time

from ..bench.machine import BenchError
from . import train_cmd
from .args import UsageError, build_parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of `lightattn` and `python -m lightattn`; returns the exit code."""
    started = time.perf_counter()
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command == "bench":
            from . import bench_cmd

            return bench_cmd.run(args, started)
        if args.command == "list":
            from . import list_cmd

            return list_cmd.run(args)
        if args.command == "models":
            from . import models_cmd

            return models_cmd.run(args)
        if args.command in ("train", "eval", "compare"):
            return train_cmd.run(args)
        if args.command == "tamper":
            from . import tamper_cmd

            return tamper_cmd.run(args)
        if args.command == "export":
            from . import export_cmd

            return export_cmd.run(args)
        if args.command == "shrink":
            from . import shrink_cmd

            return shrink_cmd.run(args)
        raise UsageError(
            "lightattn: error: choose a command: bench, list, models, train, eval, compare, "
            "tamper, export, shrink (see lightattn -h)"
        )
    except UsageError as err:
        return fail(str(err))
    except BenchError as err:
        return fail(f"lightattn {getattr(args, 'command', '')}: error: {err}")
    except SystemExit as exit_:  # --help
        return exit_.code if isinstance(exit_.code, int) else 0
    except KeyboardInterrupt:
        sys.stderr.write("lightattn: interrupted\n")
        return 130


def fail(message: str) -> int:
    sys.stderr.write(message.rstrip() + "\n")
    return 2
