"""`lightattn compare`: every mechanism in the same small backbone, trained on the same data
with the same steps and seed; test accuracy beside latency and MACs, Pareto front marked."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from ..layers import list_attention
from ..models import time_model
from .config import TrainConfig
from .loop import Trainer, build_model, load_data

# the backbone every mechanism is put into: a 4-stage Swin-style pyramid, patch 2
BACKBONE = {
    "embed_dim": 32, "depths": (1, 1, 2, 1), "num_heads": (1, 2, 4, 8), "patch_size": 2,
    "window_size": 4,
}  # fmt: skip


def log(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def mechanisms(spec: str) -> list[str]:
    """'all' or a comma-separated list of registered names."""
    names = list_attention() if spec == "all" else [s.strip() for s in spec.split(",") if s.strip()]
    unknown = [n for n in names if n not in list_attention()]
    if unknown or not names:
        raise ValueError(
            f"--attn {spec!r}: unknown mechanism(s) {unknown}; known: {', '.join(list_attention())}"
        )
    return names


def run_config(base: TrainConfig, attn: str, out: Path) -> TrainConfig:
    return replace(base, attn=attn, out=str(out / attn), progress=False)


def seconds_per_step(cfg: TrainConfig, steps: int = 3) -> float:
    """Time a few training steps of `cfg` (after one warm-up step) in a scratch directory."""
    probe = replace(cfg, out=str(Path(cfg.out).parent / f".probe-{cfg.attn}"), max_steps=steps + 1)
    trainer = Trainer(probe)
    batches = trainer._batches(0, 0)
    images, labels = next(batches)
    trainer._step(images, labels)
    times = []
    for _ in range(steps):  # the fastest step: a busy machine inflates the others
        started = time.perf_counter()
        trainer._step(images, labels)
        times.append(time.perf_counter() - started)
    return min(times)


def plan_steps(step_times: dict[str, float], budget_s: float, wanted: int, overhead: float) -> int:
    """The common step count that fits every run into the budget (evaluation overhead
    included as a fraction), at most `wanted`."""
    per_step = sum(step_times.values()) * (1.0 + overhead)
    return max(1, min(wanted, int(budget_s / per_step)))


def latency(cfg: TrainConfig, bundle, batch: int) -> tuple[float, float]:
    """(ms per image at `batch`, GMACs per image) of the backbone with cfg's attention."""
    model = build_model(cfg, bundle.num_classes, bundle.in_chans).eval()
    t = time_model(model, batch_size=batch, size=bundle.img_size, min_runs=5, min_time=0.5)
    return t.ms / batch, model.macs(bundle.img_size, bundle.img_size) / 1e9


def pareto(rows: list[dict[str, Any]], cost: str) -> set[str]:
    """Names not dominated: no other run is at least as accurate and at least as cheap."""
    front = set()
    for r in rows:
        dominated = any(
            o is not r and o["test_acc"] >= r["test_acc"] and o[cost] <= r[cost]
            and (o["test_acc"] > r["test_acc"] or o[cost] < r[cost])
            for o in rows
        )  # fmt: skip
        if not dominated:
            front.add(r["attn"])
    return front


def compare(
    base: TrainConfig, attn: str = "all", budget_minutes: float = 60.0, latency_batch: int = 32
) -> dict[str, Any]:
    """Train `base` once per mechanism within the shared budget; write table, JSON and PNG
    under `base.out`; return the result."""
    out = Path(base.out)
    out.mkdir(parents=True, exist_ok=True)
    names = mechanisms(attn)
    base = replace(base, model_kwargs={**BACKBONE, **base.model_kwargs})
    bundle = load_data(base)
    steps_per_epoch = len(bundle.train) // base.batch_size
    wanted = base.max_steps or base.epochs * steps_per_epoch
    times = {n: seconds_per_step(run_config(base, n, out)) for n in names}
    steps = plan_steps(times, budget_minutes * 60.0, wanted, overhead=0.1)
    epochs = max(1, -(-steps // steps_per_epoch))
    rows = []
    log(
        f"{len(names)} mechanisms x {steps} steps (wanted {wanted}); probe s/step: "
        + ", ".join(f"{n} {t:.3f}" for n, t in times.items())
    )
    for i, name in enumerate(names):
        log(f"[{i + 1}/{len(names)}] {name}")
        cfg = replace(run_config(base, name, out), epochs=epochs, max_steps=steps)
        started = time.perf_counter()
        summary = Trainer(cfg).run()
        wall = time.perf_counter() - started
        ms, gmacs = latency(cfg, bundle, latency_batch)
        log(f"    test acc {summary['test_acc']:.4f}, {wall / 60:.1f} min, {ms:.2f} ms/img")
        rows.append({
            "attn": name, "test_acc": summary["test_acc"], "best_val_acc": summary["best_val_acc"],
            "ms_per_img": ms, "gmacs": gmacs, "train_minutes": wall / 60, "steps": steps,
            "castling_switched_acc": summary.get("test_acc_switched"),
        })  # fmt: skip
    front = pareto(rows, "ms_per_img")
    for r in rows:
        r["pareto"] = r["attn"] in front
    result = {
        "data": base.data, "backbone": base.model, "model_kwargs": base.model_kwargs,
        "steps": steps, "wanted_steps": wanted, "epochs": epochs, "batch_size": base.batch_size,
        "seed": base.seed, "budget_minutes": budget_minutes,
        "cut": None if steps >= wanted else f"steps cut from {wanted} to {steps} to fit the budget",
        "probe_seconds_per_step": times, "rows": rows, "threads": torch.get_num_threads(),
    }  # fmt: skip
    (out / "compare.json").write_text(json.dumps(result, indent=2, default=str))
    (out / "compare.md").write_text(markdown(result))
    plot(result, out / "compare.png")
    return result


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"data {result['data']}, backbone {result['backbone']} {result['model_kwargs']}, "
        f"{result['steps']} steps of batch {result['batch_size']}, seed {result['seed']}"
        + (f"; {result['cut']}" if result["cut"] else ""),
        "",
        "| attention | test acc | best val acc | ms / img | GMACs | train min | Pareto |",
        "|---|---:|---:|---:|---:|---:|:---:|",
    ]
    for r in sorted(result["rows"], key=lambda r: -r["test_acc"]):
        lines.append(
            f"| {r['attn']} | {100 * r['test_acc']:.1f} | {100 * r['best_val_acc']:.1f} | "
            f"{r['ms_per_img']:.2f} | {r['gmacs']:.3f} | {r['train_minutes']:.1f} | "
            f"{'★' if r['pareto'] else ''} |"
        )
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for ax, key, label in (
        (axes[0], "ms_per_img", "ms per image"),
        (axes[1], "gmacs", "GMACs per image"),
    ):
        front = sorted((r for r in rows if r["attn"] in pareto(rows, key)), key=lambda r: r[key])
        for r in rows:
            ax.scatter(r[key], 100 * r["test_acc"], color="tab:red" if r in front else "tab:blue")
            ax.annotate(r["attn"], (r[key], 100 * r["test_acc"]), fontsize=8, xytext=(3, 3),
                        textcoords="offset points")  # fmt: skip
        ax.plot([r[key] for r in front], [100 * r["test_acc"] for r in front], "r--", lw=1)
        ax.set_xlabel(label)
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
    fig.suptitle(
        f"{result['data']}: {result['steps']} steps, seed {result['seed']} (red: Pareto front)",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
