"""The benchmark behind `lightattn bench`: measurement (runner, measure, memory, machine,
estimate; results holds the data) kept apart from presentation (report, plots, presets) and
from the command line (lightattn.cli)."""

from .machine import BenchError
from .results import BenchConfig, BenchResult, Row
from .runner import make_runner, run_benchmark

__all__ = ["BenchConfig", "BenchError", "BenchResult", "Row", "make_runner", "run_benchmark"]
