"""timm checkpoints (Swin, PVTv2) onto lightattn's backbones: key names and table sizes."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

import torch
from torch import Tensor, nn

# timm's non-persistent buffers, present in older checkpoints
SKIPPED_SUFFIXES = ("relative_position_index", "attn_mask")


def unwrap(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The weights inside a training checkpoint ({"model": ...} or {"state_dict": ...})."""
    for key in ("model", "state_dict"):
        inner = state_dict.get(key)
        if isinstance(inner, Mapping):
            state_dict = inner
    if not isinstance(state_dict, Mapping):
        raise ValueError(f"state_dict must be a mapping of names to tensors, got {state_dict!r}")
    return dict(state_dict)


def checkpoint_kind(state_dict: Mapping[str, Tensor]) -> str:
    """'swin' or 'pvt_v2' from the key names; ValueError for anything else."""
    keys = list(state_dict)
    if any(k.startswith("layers.") for k in keys) and "patch_embed.proj.weight" in state_dict:
        return "swin"
    if any(k.startswith(("stages.", "block1.")) for k in keys):
        return "pvt_v2"
    raise ValueError(
        f"state_dict with keys {keys[:4]}... is not a timm Swin or PVTv2 checkpoint "
        "(expected 'layers.*' or 'stages.*' keys)"
    )


def swin_key(key: str, old_layout: bool) -> str:
    """timm (or, with old_layout, the official Microsoft) Swin name -> lightattn's name."""
    if old_layout:  # the official code merges at the end of a stage, timm at the start
        key = re.sub(
            r"^layers\.(\d+)\.downsample", lambda m: f"layers.{int(m[1]) + 1}.downsample", key
        )
    key = re.sub(r"^layers\.", "stages.", key)
    key = re.sub(r"^head\.fc\.", "head.", key)
    return key.replace("relative_position_bias_table", "rel_pos_table")


def pvt_key(key: str) -> str:
    """timm (or the original PVT repository's) PVTv2 name -> lightattn's name."""
    key = key.replace("dwconv.dwconv", "dwconv")
    key = re.sub(r"^patch_embed1\.", "patch_embed.", key)
    key = re.sub(r"^patch_embed(\d)\.", lambda m: f"stages.{int(m[1]) - 1}.downsample.", key)
    key = re.sub(r"^block(\d+)\.(\d+)\.", lambda m: f"stages.{int(m[1]) - 1}.blocks.{m[2]}.", key)
    return re.sub(r"^norm(\d+)\.", lambda m: f"stages.{int(m[1]) - 1}.norm.", key)


def resize_table(table: Tensor, size: int) -> Tensor:
    """A (T, heads) relative position table of a (2r-1)² grid -> (size, heads) of another
    square grid, centre on centre: a window clipped to a small map (timm builds a smaller
    table) reads the same offsets from the centre of the full table; entries no window can
    reach are zero."""
    side, new_side = round(table.shape[0] ** 0.5), round(size**0.5)
    if side * side != table.shape[0] or new_side * new_side != size:
        raise ValueError(f"relative position table of shape {tuple(table.shape)} is not square")
    grid = table.T.reshape(-1, side, side)
    out = table.new_zeros(grid.shape[0], new_side, new_side)
    n = min(side, new_side)
    a, b = (side - n) // 2, (new_side - n) // 2
    out[:, b : b + n, b : b + n] = grid[:, a : a + n, a : a + n]
    return out.reshape(-1, size).T.contiguous()


def convert_timm_state_dict(
    state_dict: Mapping[str, Tensor], model: nn.Module | None = None
) -> dict[str, Tensor]:
    """timm's Swin or PVTv2 state dict under lightattn's names. With `model`, relative
    position tables are resized (centre on centre) to the model's where timm clipped a
    window to a small map."""
    state_dict = unwrap(state_dict)
    kind = checkpoint_kind(state_dict)
    rename: Callable[[str], str]
    if kind == "swin":
        old = "head.fc.weight" not in state_dict and "head.weight" in state_dict
        rename = lambda key: swin_key(key, old)  # noqa: E731
    else:
        rename = pvt_key
    out = {rename(k): v for k, v in state_dict.items() if not k.endswith(SKIPPED_SUFFIXES)}
    if model is not None:
        target = model.state_dict()
        for key, value in out.items():
            table = key.endswith("rel_pos_table") and key in target
            if table and value.shape != target[key].shape:
                out[key] = resize_table(value, target[key].shape[0])
    return out


def check_keys(model: nn.Module, state_dict: Mapping[str, Tensor]) -> None:
    """ValueError naming missing, unexpected and mis-shaped entries."""
    target = model.state_dict()
    missing = sorted(set(target) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(target))
    shapes = sorted(
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(target[k].shape)}"
        for k in set(target) & set(state_dict)
        if state_dict[k].shape != target[k].shape
    )
    problems = [
        f"{label} ({len(items)}): {', '.join(items[:5])}{' ...' if len(items) > 5 else ''}"
        for label, items in (("missing", missing), ("unexpected", unexpected), ("shape", shapes))
        if items
    ]
    if problems:
        raise ValueError(
            "the checkpoint does not match the model (is it the same configuration?): "
            + "; ".join(problems)
        )


@torch.no_grad()
def load_timm_state_dict(model: nn.Module, state_dict: Mapping[str, Tensor]) -> nn.Module:
    """Load a timm 1.0 SwinTransformer or PyramidVisionTransformerV2 state dict (also an
    official Swin or PVTv2 one) into the lightattn model of the same configuration, strictly:
    every weight of the model is loaded and nothing is left over. Returns the model.

    Swin: `layers.*` -> `stages.*`, `relative_position_bias_table` -> `rel_pos_table` (same
    layout), `head.fc` -> `head`; the non-persistent `relative_position_index`/`attn_mask`
    buffers are dropped. PVTv2 (incl. `linear=True`): timm's names are lightattn's.
    A mismatch raises ValueError naming the keys.
    """
    converted = convert_timm_state_dict(state_dict, model)
    check_keys(model, converted)
    model.load_state_dict(converted, strict=True)
    return model
