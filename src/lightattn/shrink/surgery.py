"""The structural steps: each takes a model with its `Arch` and returns the smaller model
and its `Arch`, the weights carried over (sliced, renamed or converted)."""

from __future__ import annotations

import copy
import itertools
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor, nn

from ..layers.hilo import HiLoAttention
from ..models import Backbone
from ..train.config import TrainConfig
from ..train.loop import build_model
from .groups import (
    check_residual_support,
    head_channel_groups,
    head_mlp_groups,
    is_qkv_style,
    prune_in_place,
    residual_groups,
    slice_state,
    taylor_importance,
    top_units,
)

MAX_CANDIDATES = 20  # block subsets tried per stage by `depth` before falling back to scores
LossFn = Callable[[nn.Module], float]


@dataclass
class Arch:
    """What rebuilds a shrunk model: the training settings it is built from (a `TrainConfig`
    as a dict: model, model_kwargs, attn, img_size, ...), the data's classes and channels,
    and the kept head/channel units of every pruned group (`prune`)."""

    config: dict[str, Any]
    num_classes: int
    in_chans: int
    pruned: dict[str, list[int]] = field(default_factory=dict)

    @property
    def img_size(self) -> int:
        return int(self.config["img_size"])

    def train_config(self) -> TrainConfig:
        return TrainConfig.from_dict({**self.config, "progress": False})

    def with_config(self, **changes: Any) -> Arch:
        config = json.loads(json.dumps({**self.config, **changes}))  # tuples as lists
        return replace(self, config=config, pruned=dict(self.pruned))

    def with_kwargs(self, **changes: Any) -> Arch:
        kwargs = {**self.config.get("model_kwargs", {}), **changes}
        for alias in ("embed_dims", "mlp_ratios"):
            kwargs.pop(alias, None)
        return self.with_config(model_kwargs=kwargs)

    def build_full(self) -> nn.Module:
        """The model of `config` in eval mode, before pruning (the shapes `lightattn eval`
        loads)."""
        return build_model(self.train_config(), self.num_classes, self.in_chans).eval()

    def build(self) -> nn.Module:
        """The model with its pruned groups cut, in eval mode (random weights: load them
        after)."""
        model = self.build_full()
        if self.pruned:
            groups = head_mlp_groups(model)
            unknown = sorted(set(self.pruned) - {g.key for g in groups})
            if unknown:
                raise ValueError(f"pruned groups {unknown} are not in the model")
            keep = {k: torch.tensor(v, dtype=torch.long) for k, v in self.pruned.items()}
            prune_in_place(model, groups, keep)
        return model


def half_up(x: float) -> int:
    return math.floor(x + 0.5)


def backbone(model: nn.Module, step: str) -> Backbone:
    if not isinstance(model, Backbone):
        raise ValueError(f"step {step}: needs a lightattn Backbone, got {type(model).__name__}")
    return model


def stage_heads(model: Backbone) -> list[int]:
    """Each stage's head count: the spec's, else its first attention's, else 1."""
    heads = []
    for spec, stage in zip(model.specs, model.stages, strict=True):
        attn = next((b.attn for b in stage.blocks if b.attn is not None), None)
        if spec.num_heads is not None:
            heads.append(spec.num_heads)
        else:
            heads.append(attn.num_heads if attn is not None else 1)
    return heads


def explicit(arch: Arch, model: Backbone, **changes: Any) -> Arch:
    """`arch` with every per-stage setting written out (embed_dim, depths, num_heads,
    mlp_ratio), then `changes` applied."""
    specs = model.specs
    settings = {
        "embed_dim": [s.dim for s in specs],
        "depths": [s.depth for s in specs],
        "num_heads": stage_heads(model),
        "mlp_ratio": [s.mlp_ratio for s in specs],
    }
    return arch.with_kwargs(**{**settings, **changes})


def build_checked(arch: Arch, step: str) -> Backbone:
    try:
        return backbone(arch.build_full(), step)
    except ValueError as err:
        raise ValueError(f"step {step}: model {arch.config.get('model')!r}: {err}") from err


def load_strict(model: nn.Module, state: dict[str, Tensor], step: str) -> None:
    try:
        model.load_state_dict(state)
    except RuntimeError as err:  # a bug in a step, never the user's input
        raise RuntimeError(f"step {step}: the carried-over weights do not fit: {err}") from err


# depth ----------------------------------------------------------------------------------------


def with_blocks(
    model: Backbone, arch: Arch, kept: dict[int, tuple[int, ...]], step: str = "depth"
) -> tuple[Backbone, Arch]:
    """A model with only blocks `kept[i]` of each stage i named there (in order; each takes
    the attention pattern of its new position), the others' weights unchanged."""
    depths = [len(kept.get(i, range(s.depth))) for i, s in enumerate(model.specs)]
    new_arch = explicit(arch, model, depths=depths)
    new = build_checked(new_arch, step)
    state = {}
    for key, value in model.state_dict().items():
        parts = key.split(".")
        if parts[0] == "stages" and parts[2] == "blocks" and int(parts[1]) in kept:
            blocks = kept[int(parts[1])]
            if int(parts[3]) not in blocks:
                continue
            parts[3] = str(blocks.index(int(parts[3])))
        state[".".join(parts)] = value
    load_strict(new, state, step)
    return new, new_arch


def choose_blocks(
    model: Backbone, arch: Arch, stage: int, keep: int, loss: LossFn
) -> tuple[int, ...]:
    """The `keep` blocks of `stage` whose model (the other stages whole) has the lowest
    distillation loss; with more than MAX_CANDIDATES subsets, the blocks whose single removal
    costs most."""
    depth = model.specs[stage].depth
    subsets = list(itertools.combinations(range(depth), keep))
    if len(subsets) <= MAX_CANDIDATES:
        scored = [(loss(with_blocks(model, arch, {stage: s})[0]), s) for s in subsets]
        return min(scored)[1]
    cost = []
    for j in range(depth):
        others = tuple(k for k in range(depth) if k != j)
        cost.append(loss(with_blocks(model, arch, {stage: others})[0]))
    ranked = sorted(range(depth), key=lambda j: -cost[j])
    return tuple(sorted(ranked[:keep]))


def drop_blocks(
    model: nn.Module, arch: Arch, fraction: float, loss: LossFn
) -> tuple[Backbone, Arch, str]:
    """`depth=f`: every stage keeps max(1, round(f·depth)) blocks, chosen by `loss`."""
    model = backbone(model, "depth")
    kept = {}
    for i, spec in enumerate(model.specs):
        keep = max(1, round(spec.depth * fraction))
        if keep < spec.depth:
            kept[i] = choose_blocks(model, arch, i, keep, loss)
    new, new_arch = with_blocks(model, arch, kept)
    note = "; ".join(f"stage {i}: kept blocks {list(b)}" for i, b in kept.items())
    return new, new_arch, note or "every stage has one block: nothing dropped"


# width ----------------------------------------------------------------------------------------


def narrow(
    model: nn.Module, arch: Arch, fraction: float, batches: list, loss_fn: Callable
) -> tuple[Backbone, Arch, str]:
    """`width=f`: each stage's channels x f, as heads x f (at least one; rounded half up)
    of the same width, or narrower heads where the head count cannot fall (one head); MLP
    hidden channels x f (same ratio). The residual channels, heads, channels within heads
    and hidden channels kept are the most important by first-order Taylor importance on
    `batches`."""
    model = backbone(model, "width")
    check_residual_support(model)
    dims, new_heads = [], []
    for spec, h in zip(model.specs, stage_heads(model), strict=True):
        new_h = max(1, half_up(h * fraction))
        head_dim = max(1, half_up(spec.dim * fraction / new_h))
        dims.append(new_h * head_dim)
        new_heads.append(new_h)
    new_arch = explicit(arch, model, embed_dim=dims, num_heads=new_heads)
    new = build_checked(new_arch, "width")

    def all_groups(m: Backbone) -> list:
        return residual_groups(m) + head_mlp_groups(m) + head_channel_groups(m)

    groups = all_groups(model)
    sizes = {g.key: g.size for g in all_groups(new)}
    scores = taylor_importance(model, groups, batches, loss_fn)
    keep = {g.key: top_units(scores[g.key], sizes[g.key]) for g in groups}
    load_strict(new, slice_state(model.state_dict(), groups, keep), "width")
    return new, new_arch, f"channels {dims}, heads {new_heads}"


# attention ------------------------------------------------------------------------------------


def converted_attention(src: nn.Module, dst: nn.Module) -> dict[str, Tensor]:
    """Tensors for `dst`'s parameters derived from a qkv-style `src`: qkv and proj as they
    are, q and kv (SRA, DAT) split from qkv, HiLo's Hi-Fi heads from the first heads and its
    Lo-Fi heads from the others (its per-branch projections from proj's diagonal blocks)."""
    out = {name: p.detach() for name, p in src.named_parameters()}
    if not is_qkv_style(src):
        return out
    inner = src.qkv.out_features // 3
    wq, wk, wv = src.qkv.weight.detach().split(inner)
    bq = bk = bv = None
    if src.qkv.bias is not None:
        bq, bk, bv = src.qkv.bias.detach().split(inner)
    out.update({"q.weight": wq, "kv.weight": torch.cat([wk, wv])})
    if bq is not None:
        out.update({"q.bias": bq, "kv.bias": torch.cat([bk, bv])})
    proj_w = src.proj.weight.detach()
    proj_b = None if src.proj.bias is None else src.proj.bias.detach()
    if isinstance(dst, HiLoAttention) and dst.num_heads * dst.head_dim == inner:
        ch = dst.hifi_heads * dst.head_dim
        hi, lo = slice(0, ch), slice(ch, inner)
        out.update({
            "hifi_qkv.weight": torch.cat([wq[hi], wk[hi], wv[hi]]),
            "hifi_proj.weight": proj_w[hi, hi], "lofi_q.weight": wq[lo],
            "lofi_kv.weight": torch.cat([wk[lo], wv[lo]]), "lofi_proj.weight": proj_w[lo, lo],
        })  # fmt: skip
        if bq is not None:
            out.update({
                "hifi_qkv.bias": torch.cat([bq[hi], bk[hi], bv[hi]]),
                "lofi_q.bias": bq[lo], "lofi_kv.bias": torch.cat([bk[lo], bv[lo]]),
            })  # fmt: skip
        if proj_b is not None:
            out.update({"hifi_proj.bias": proj_b[hi], "lofi_proj.bias": proj_b[lo]})
    return out


def copy_attention(src: nn.Module, dst: nn.Module) -> list[str]:
    """Copy what `converted_attention` gives into `dst` where the shapes match; returns the
    names of `dst`'s parameters left at their initialisation."""
    given = converted_attention(src, dst)
    fresh = []
    with torch.no_grad():
        for name, p in dst.named_parameters():
            value = given.get(name)
            if value is not None and value.shape == p.shape:
                p.copy_(value)
            else:
                fresh.append(name)
    return fresh


def swap_attention(model: nn.Module, arch: Arch, name: str) -> tuple[Backbone, Arch, str]:
    """`attention=NAME`: every attention block becomes NAME (its default settings); the
    rest of the weights carried over, the attention's from the old one where they map."""
    model = backbone(model, "attention")
    new_arch = explicit(arch, model).with_config(attn=name, attn_kwargs={})
    new = build_checked(new_arch, f"attention={name}")
    old_state = model.state_dict()
    state = new.state_dict()
    for key in state:
        if ".attn." not in key and key in old_state and old_state[key].shape == state[key].shape:
            state[key] = old_state[key]
    missing = [k for k in state if ".attn." not in k and k not in old_state]
    if missing:
        raise RuntimeError(f"step attention={name}: weights with no source: {missing[:3]}")
    new.load_state_dict(state)
    fresh: set[str] = set()
    for old_stage, new_stage in zip(model.stages, new.stages, strict=True):
        for old_block, new_block in zip(old_stage.blocks, new_stage.blocks, strict=True):
            if old_block.attn is not None and new_block.attn is not None:
                fresh.update(copy_attention(old_block.attn, new_block.attn))
    note = "attention weights carried over" if not fresh else f"initialised: {sorted(fresh)}"
    return new, new_arch, note


# prune ----------------------------------------------------------------------------------------


def prune(
    model: nn.Module, arch: Arch, fraction: float, batches: list, loss_fn: Callable
) -> tuple[Backbone, Arch, str]:
    """`prune=p`: each attention (each HiLo branch) keeps max(1, round((1-p)·heads)) heads,
    each MLP max(1, round((1-p)·hidden)) hidden channels, the most important by first-order
    Taylor importance on `batches`; the residual width is unchanged."""
    model = backbone(model, "prune")
    if arch.pruned:
        raise ValueError("step prune: the model is already pruned (give prune once)")
    groups = head_mlp_groups(model)
    scores = taylor_importance(model, groups, batches, loss_fn)
    keep = {}
    for g in groups:
        count = max(1, round(g.size * (1.0 - fraction)))
        if count < g.size:
            keep[g.key] = top_units(scores[g.key], count)
    new = copy.deepcopy(model).eval()
    prune_in_place(new, groups, keep)
    new_arch = replace(arch, pruned={k: v.tolist() for k, v in keep.items()})
    heads = sum(g.size for g in groups if g.kind == "heads")
    kept_heads = sum(len(keep.get(g.key, range(g.size))) for g in groups if g.kind == "heads")
    hidden = sum(g.size for g in groups if g.kind == "mlp")
    kept_hidden = sum(len(keep.get(g.key, range(g.size))) for g in groups if g.kind == "mlp")
    return new, new_arch, f"heads {heads} -> {kept_heads}, MLP channels {hidden} -> {kept_hidden}"


def resize_input(arch: Arch, value: float | int) -> Arch:
    """`resolution=s`: the input side s, or round(s·side) for a factor s < 1."""
    side = value if isinstance(value, int) else max(1, round(arch.img_size * value))
    if side >= arch.img_size:
        raise ValueError(
            f"step resolution={value}: side {side} is not below the current {arch.img_size}"
        )
    return arch.with_config(img_size=side)
