"""Shrinking a trained model (issue 13, item 4): `shrink(ShrinkConfig(...))` applies a step
list (depth, width, resolution, attention=NAME, prune=p, int8) one step at a time, each
structural step followed by knowledge distillation from the original model, and measures
params, MACs, latency (eager and ONNX Runtime) and accuracy after each (the
`lightattn shrink` command). Depends on layers, models, train and export only."""

from .distill import DistillConfig, KDSet, distill, kd_loss, mean_kd_loss
from .groups import Group, head_mlp_groups, prune_in_place, residual_groups, taylor_importance
from .pipeline import ShrinkConfig, load_shrunk, shrink
from .steps import STEP_NAMES, Step, parse_steps
from .surgery import Arch, drop_blocks, narrow, prune, resize_input, swap_attention

__all__ = [
    "STEP_NAMES",
    "Arch",
    "DistillConfig",
    "Group",
    "KDSet",
    "ShrinkConfig",
    "Step",
    "distill",
    "drop_blocks",
    "head_mlp_groups",
    "kd_loss",
    "load_shrunk",
    "mean_kd_loss",
    "narrow",
    "parse_steps",
    "prune",
    "prune_in_place",
    "residual_groups",
    "resize_input",
    "shrink",
    "swap_attention",
    "taylor_importance",
]
