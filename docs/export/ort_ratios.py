"""ORT/eager latency ratio of every registered mechanism, measured interleaved (one eager
call, one onnxruntime call, repeated), so that a busy machine slows both alike.

    python docs/export/ort_ratios.py --size 56 --dim 64 --batch 8 --threads 2 1 --rounds 15
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import lightattn
from lightattn.export.onnx import (
    eager_outputs,
    export_onnx,
    max_abs_diff,
    ort_feed,
    ort_session,
)


def seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--size", type=int, default=56)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--threads", type=int, nargs="+", default=[2])
    p.add_argument("--rounds", type=int, default=15)
    args = p.parse_args()
    folder = Path(tempfile.mkdtemp())
    print(f"load average at start {os.getloadavg()[0]:.2f}")
    print(
        "| mechanism | "
        + " | ".join(
            f"eager ms ({t} thr) | ORT ms ({t} thr) | ORT/eager ({t} thr)" for t in args.threads
        )
        + " | max abs diff |"
    )
    print("|---" * (1 + 3 * len(args.threads) + 1) + "|")
    cases = [(name, name, {}) for name in lightattn.list_attention()]
    cases.append(("window+shift", "window", {"shift": True}))
    for label, name, kwargs in cases:
        torch.manual_seed(0)
        module = lightattn.create_attention(name, args.dim, **kwargs).eval()
        x = torch.randn(args.batch, args.dim, args.size, args.size)
        torch.set_num_threads(1)
        path = export_onnx(module, torch.randn(2, args.dim, 9, 11), folder / f"{label}.onnx")
        cells, diff = [], 0.0
        for threads in args.threads:
            torch.set_num_threads(threads)
            session = ort_session(path, threads)
            feed = ort_feed(session, x)
            diff = max(diff, max_abs_diff(session.run(None, feed), eager_outputs(module, x)))
            calls = (lambda m=module, x=x: eager_outputs(m, x),
                     lambda s=session, f=feed: s.run(None, f))  # fmt: skip
            for call in calls:
                call()  # warm-up
            pairs = [tuple(seconds(call) for call in calls) for _ in range(args.rounds)]
            e, o = (float(np.median(v)) * 1e3 for v in zip(*pairs, strict=True))
            ratio = float(np.median([b / a for a, b in pairs]))
            cells += [f"{e:.1f}", f"{o:.1f}", f"{ratio:.2f}×"]
        print(f"| {label} | " + " | ".join(cells) + f" | {diff:.1e} |", flush=True)
    print(f"load average at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
