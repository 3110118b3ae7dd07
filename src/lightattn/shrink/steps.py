"""The step list of `lightattn shrink`: parsing and order checks."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..layers import list_attention

STEP_NAMES = ("depth", "width", "resolution", "attention", "prune", "int8")
DEFAULTS = {"depth": 0.5, "width": 0.5, "resolution": 0.75, "prune": 0.3}
STRUCTURAL = ("depth", "width", "attention", "prune")  # followed by distillation
HELP = (
    "depth[=f] (keep f of each stage's blocks, 0.5), width[=f] (channels and heads x f, 0.5), "
    "resolution[=s] (input side s, or x s for s < 1; 0.75), attention=NAME, "
    "prune[=p] (drop p of every block's heads and MLP channels, 0.3), int8"
)


@dataclass(frozen=True)
class Step:
    """One shrink step: `kind` (one of STEP_NAMES) and its value (a fraction, a side in
    pixels, a mechanism name, or None for int8)."""

    kind: str
    value: float | int | str | None = None

    @property
    def label(self) -> str:
        if self.value is None:
            return self.kind
        return f"{self.kind}={self.value}"

    @property
    def structural(self) -> bool:
        return self.kind in STRUCTURAL


def fraction(kind: str, text: str) -> float:
    """A number in (0, 1); ValueError naming the step otherwise."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0.0 < value < 1.0:
        raise ValueError(f"step {kind}={text!r}: the value must be a number in (0, 1)")
    return value


def resolution_value(text: str) -> float | int:
    """An integer side >= 2 (e.g. 24) or a factor in (0, 1) (e.g. 0.75)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if value.is_integer() and value >= 2 and "." not in text:
        return int(value)
    if 0.0 < value < 1.0:
        return value
    raise ValueError(
        f"step resolution={text!r}: give a side in pixels (an integer >= 2) or a factor in (0, 1)"
    )


def parse_step(text: str) -> Step:
    """'depth', 'width=0.5', 'resolution=24', 'attention=hilo', 'prune=0.3', 'int8'."""
    kind, sep, value = (part.strip() for part in text.strip().partition("="))
    if kind not in STEP_NAMES:
        raise ValueError(f"unknown step {text.strip()!r}; steps: {HELP}")
    if kind == "int8":
        if sep:
            raise ValueError(f"step {text.strip()!r}: int8 takes no value")
        return Step("int8")
    if kind == "attention":
        if value not in list_attention():
            raise ValueError(
                f"step {text.strip()!r}: attention=NAME needs a registered mechanism; "
                f"known: {', '.join(list_attention())}"
            )
        return Step("attention", value)
    if not sep:
        return Step(kind, DEFAULTS[kind])
    if kind == "resolution":
        return Step(kind, resolution_value(value))
    return Step(kind, fraction(kind, value))


def parse_steps(text: str) -> list[Step]:
    """A comma-separated step list -> Steps; ValueError with one line for an unknown step, a
    bad value or an order the pipeline cannot run (see `check_order`)."""
    pieces = [p for p in (text or "").split(",") if p.strip()]
    if not pieces:
        raise ValueError(f"steps={text!r}: give at least one step: {HELP}")
    steps = [parse_step(p) for p in pieces]
    check_order(steps)
    return steps


def check_order(steps: list[Step]) -> None:
    """int8 comes last and once; after `prune` (per-block sizes) only resolution and int8
    may follow, since depth, width and attention rebuild the blocks from per-stage settings."""
    kinds = [s.kind for s in steps]
    if "int8" in kinds and (kinds.count("int8") > 1 or kinds[-1] != "int8"):
        raise ValueError("steps: int8 must be the last step, given once")
    if "prune" in kinds:
        after = kinds[kinds.index("prune") + 1 :]
        bad = [k for k in after if k not in ("resolution", "int8")]
        if bad:
            raise ValueError(
                f"steps: {bad[0]} cannot follow prune (prune leaves per-block sizes that "
                "depth, width and attention would rebuild); put prune after them"
            )
