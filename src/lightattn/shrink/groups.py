"""Structured channel groups of a `Backbone`: the residual channels of each stage, the heads
of each attention, the hidden channels of each MLP. A group lists every parameter slice that
belongs to each of its units, so one table serves importance scoring, slicing a state dict
for a rebuilt (narrower) model, and pruning a model in place."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from ..layers.hilo import HiLoAttention
from ..models import Backbone
from ..models._blocks import ConvFFN, Mlp
from ..models._downsample import PatchEmbed, PatchMerging

QKV_PARAMS = {"qkv.weight", "qkv.bias", "proj.weight", "proj.bias", "rel_pos_table"}


@dataclass
class Entry:
    """Positions along `dim` of parameter `name` (a state-dict key); `units[i]` is the unit
    that position i belongs to."""

    name: str
    dim: int
    units: Tensor


@dataclass
class Group:
    """`size` prunable units (channels or heads) under `key`; `count_attr` is the
    (module path, attribute) that holds the unit count, updated when pruning in place."""

    kind: str  # "residual" | "heads" | "head_channels" | "mlp"
    key: str
    size: int
    entries: list[Entry] = field(default_factory=list)
    count_attr: tuple[str, str] | None = None

    def add(self, name: str, dim: int, units: Tensor) -> None:
        self.entries.append(Entry(name, dim, units))


def arange(n: int) -> Tensor:
    return torch.arange(n)


def is_qkv_style(attn: nn.Module) -> bool:
    """A mechanism whose only parameters are a packed qkv Linear, a proj Linear and an
    optional per-head table (window, mhsa, linear, axial, grid, nystrom)."""
    names = {n for n, _ in attn.named_parameters()}
    return (
        isinstance(getattr(attn, "qkv", None), nn.Linear)
        and isinstance(getattr(attn, "proj", None), nn.Linear)
        and names <= QKV_PARAMS
    )


def head_groups(prefix: str, attn: nn.Module) -> list[Group]:
    """The head groups of one attention module (qkv-style: one; HiLo: Hi-Fi and Lo-Fi)."""
    if is_qkv_style(attn):
        inner, heads = attn.qkv.out_features // 3, attn.num_heads
        d = inner // heads
        g = Group("heads", prefix, heads, count_attr=(prefix, "num_heads"))
        for part in ("weight", "bias"):
            if getattr(attn.qkv, part) is not None:
                g.add(f"{prefix}.qkv.{part}", 0, (arange(3 * inner) % inner) // d)
        g.add(f"{prefix}.proj.weight", 1, arange(inner) // d)
        if getattr(attn, "rel_pos_table", None) is not None:
            g.add(f"{prefix}.rel_pos_table", 1, arange(heads))
        return [g]
    if isinstance(attn, HiLoAttention):
        return hilo_groups(prefix, attn)
    return []


def head_channel_group(prefix: str, attn: nn.Module) -> Group:
    """The channels within the heads of a qkv-style attention, shared by all heads: unit j
    is channel j of every head's q, k and v and the matching proj input."""
    inner, heads = attn.qkv.out_features // 3, attn.num_heads
    d = inner // heads
    g = Group("head_channels", f"{prefix}#channels", d)
    for part in ("weight", "bias"):
        if getattr(attn.qkv, part) is not None:
            g.add(f"{prefix}.qkv.{part}", 0, arange(3 * inner) % d)
    g.add(f"{prefix}.proj.weight", 1, arange(inner) % d)
    return g


def hilo_groups(prefix: str, attn: HiLoAttention) -> list[Group]:
    d, groups = attn.head_dim, []
    if attn.hifi_qkv is not None:
        inner = attn.hifi_qkv.out_features // 3
        g = Group("heads", f"{prefix}#hifi", inner // d, count_attr=(prefix, "hifi_heads"))
        for part in ("weight", "bias"):
            if getattr(attn.hifi_qkv, part) is not None:
                g.add(f"{prefix}.hifi_qkv.{part}", 0, (arange(3 * inner) % inner) // d)
        g.add(f"{prefix}.hifi_proj.weight", 1, arange(inner) // d)
        groups.append(g)
    if attn.lofi_q is not None:
        inner = attn.lofi_q.out_features
        g = Group("heads", f"{prefix}#lofi", inner // d, count_attr=(prefix, "lofi_heads"))
        for part in ("weight", "bias"):
            if getattr(attn.lofi_q, part) is not None:
                g.add(f"{prefix}.lofi_q.{part}", 0, arange(inner) // d)
            if getattr(attn.lofi_kv, part) is not None:
                g.add(f"{prefix}.lofi_kv.{part}", 0, (arange(2 * inner) % inner) // d)
        g.add(f"{prefix}.lofi_proj.weight", 1, arange(inner) // d)
        groups.append(g)
    return groups


def mlp_group(prefix: str, mlp: Mlp) -> Group:
    hidden = mlp.fc1.out_features
    g = Group("mlp", prefix, hidden)
    g.add(f"{prefix}.fc1.weight", 0, arange(hidden))
    if mlp.fc1.bias is not None:
        g.add(f"{prefix}.fc1.bias", 0, arange(hidden))
    g.add(f"{prefix}.fc2.weight", 1, arange(hidden))
    if isinstance(mlp, ConvFFN):
        g.add(f"{prefix}.dwconv.weight", 0, arange(hidden))
        if mlp.dwconv.bias is not None:
            g.add(f"{prefix}.dwconv.bias", 0, arange(hidden))
    return g


def blocks(model: Backbone) -> Iterable[tuple[str, nn.Module]]:
    for i, stage in enumerate(model.stages):
        for j, block in enumerate(stage.blocks):
            yield f"stages.{i}.blocks.{j}", block


def head_mlp_groups(model: Backbone) -> list[Group]:
    """Every attention's head groups and every MLP's hidden-channel group."""
    groups: list[Group] = []
    for prefix, block in blocks(model):
        if block.attn is not None:
            groups += head_groups(f"{prefix}.attn", block.attn)
        groups.append(mlp_group(f"{prefix}.mlp", block.mlp))
    return groups


def head_channel_groups(model: Backbone) -> list[Group]:
    """The within-head channel group of every qkv-style attention."""
    return [
        head_channel_group(f"{prefix}.attn", block.attn)
        for prefix, block in blocks(model)
        if block.attn is not None and is_qkv_style(block.attn)
    ]


def add_norm(g: Group, prefix: str, norm: nn.Module | None, units: Tensor) -> None:
    if norm is None:
        return
    g.add(f"{prefix}.weight", 0, units)
    if norm.bias is not None:
        g.add(f"{prefix}.bias", 0, units)


def add_linear_out(g: Group, prefix: str, linear: nn.Module, units: Tensor) -> None:
    g.add(f"{prefix}.weight", 0, units)
    if linear.bias is not None:
        g.add(f"{prefix}.bias", 0, units)


def add_downsample_in(g: Group, prefix: str, module: nn.Module, dim: int) -> None:
    """The next stage's downsampling reads this stage's channels."""
    if isinstance(module, PatchMerging):
        add_norm(g, f"{prefix}.norm", module.norm, arange(4 * dim) % dim)
        g.add(f"{prefix}.reduction.weight", 1, arange(4 * dim) % dim)
    else:
        g.add(f"{prefix}.proj.weight", 1, arange(dim))


def add_downsample_out(g: Group, prefix: str, module: nn.Module, dim: int) -> None:
    if isinstance(module, PatchMerging):
        g.add(f"{prefix}.reduction.weight", 0, arange(dim))
    else:
        add_linear_out(g, f"{prefix}.proj", module.proj, arange(dim))
        add_norm(g, f"{prefix}.norm", module.norm, arange(dim))


def check_residual_support(model: Backbone) -> None:
    """ValueError unless every stem/downsampling is a patch embedding or patch merging and
    every attention is qkv-style (the residual channels then appear only where listed)."""
    downsamples = [model.patch_embed] + [s.downsample for s in model.stages[1:]]
    for module in downsamples:
        if not isinstance(module, (PatchEmbed, PatchMerging)):
            raise ValueError(
                f"width: the {type(module).__name__} downsampling is not supported "
                "(patch embedding and patch merging are)"
            )
    for prefix, block in blocks(model):
        if block.attn is not None and not is_qkv_style(block.attn):
            name = getattr(block.attn, "name", type(block.attn).__name__)
            raise ValueError(
                f"width: attention {name!r} ({prefix}) is not supported; width works on "
                "qkv/proj mechanisms (window, mhsa, linear, axial, grid, nystrom): put width "
                "before attention="
            )


def residual_groups(model: Backbone) -> list[Group]:
    """One group per stage: the stage's residual (token) channels."""
    check_residual_support(model)
    groups = []
    for i, stage in enumerate(model.stages):
        dim = model.specs[i].dim
        units, g = arange(dim), Group("residual", f"stages.{i}", dim)
        if i == 0:
            add_downsample_out(g, "patch_embed", model.patch_embed, dim)
        else:
            add_downsample_out(g, f"stages.{i}.downsample", stage.downsample, dim)
        for j, block in enumerate(stage.blocks):
            p = f"stages.{i}.blocks.{j}"
            add_norm(g, f"{p}.norm1", block.norm1, units)
            if block.attn is not None:
                g.add(f"{p}.attn.qkv.weight", 1, units)
                add_linear_out(g, f"{p}.attn.proj", block.attn.proj, units)
            add_norm(g, f"{p}.norm2", block.norm2, units)
            g.add(f"{p}.mlp.fc1.weight", 1, units)
            add_linear_out(g, f"{p}.mlp.fc2", block.mlp.fc2, units)
        add_norm(g, f"stages.{i}.norm", stage.norm, units)
        if i + 1 < len(model.stages):
            add_downsample_in(g, f"stages.{i + 1}.downsample", model.stages[i + 1].downsample, dim)
        else:
            add_norm(g, "norm", model.norm, units)
            if isinstance(model.head, nn.Linear):
                g.add("head.weight", 1, units)
        groups.append(g)
    return groups


def taylor_importance(
    model: nn.Module,
    groups: list[Group],
    batches: Iterable[tuple[Tensor, Tensor]],
    loss_fn: Callable[[Tensor, Tensor], Tensor],
) -> dict[str, Tensor]:
    """First-order Taylor importance of every unit: the sum over its weights of
    |w · dL/dw|, the gradient accumulated over `batches` (images, targets) in eval mode
    (no dropout or stochastic depth). -> {group key: (size,) float64 scores}."""
    params = dict(model.named_parameters())
    was_training = model.training
    model.eval()
    model.zero_grad(set_to_none=True)
    for images, targets in batches:
        loss_fn(model(images), targets).backward()
    scores = {}
    for g in groups:
        score = torch.zeros(g.size, dtype=torch.float64)
        for e in g.entries:
            p = params[e.name]
            if p.grad is None:
                continue
            contrib = (p.detach() * p.grad).abs().movedim(e.dim, 0).reshape(p.shape[e.dim], -1)
            score.index_add_(0, e.units, contrib.sum(1).double())
        scores[g.key] = score
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return scores


def top_units(score: Tensor, count: int) -> Tensor:
    """The `count` highest-scoring units, in ascending index order (ties: lower index)."""
    order = torch.argsort(-score, stable=True)
    return order[:count].sort().values


def kept_positions(groups: list[Group], keep: dict[str, Tensor]) -> dict[tuple[str, int], Tensor]:
    """(parameter, dim) -> the positions kept along dim: those whose unit is kept in every
    group in `keep` that lists the pair (heads and channels within heads compose)."""
    masks: dict[tuple[str, int], Tensor] = {}
    for g in groups:
        if g.key not in keep:
            continue
        for e in g.entries:
            mask = torch.isin(e.units, keep[g.key])
            pair = (e.name, e.dim)
            masks[pair] = masks[pair] & mask if pair in masks else mask
    return {pair: torch.nonzero(mask).flatten() for pair, mask in masks.items()}


def slice_state(
    state: dict[str, Tensor], groups: list[Group], keep: dict[str, Tensor]
) -> dict[str, Tensor]:
    """A copy of `state` with every group in `keep` cut down to its kept units."""
    out = dict(state)
    for (name, dim), index in kept_positions(groups, keep).items():
        out[name] = out[name].index_select(dim, index)
    return out


def pad_state(
    compact: dict[str, Tensor],
    full_shapes: dict[str, torch.Size],
    groups: list[Group],
    keep: dict[str, Tensor],
) -> dict[str, Tensor]:
    """The inverse of `slice_state` for parameters cut along one dimension (as `prune`
    cuts them): the kept values put back at their positions in zeros of `full_shapes`."""
    out = dict(compact)
    positions = kept_positions(groups, keep)
    names = [name for name, _ in positions]
    for (name, dim), index in positions.items():
        if names.count(name) > 1:
            raise ValueError(f"pad_state: {name} is cut along more than one dimension")
        full = torch.zeros(full_shapes[name], dtype=compact[name].dtype)
        out[name] = full.index_copy(dim, index, compact[name])
    return out


def resized_module(module: nn.Module, tensors: dict[str, Tensor]) -> nn.Module:
    """A Linear / depthwise Conv2d / LayerNorm like `module` with new `tensors` (its
    parameters by attribute name)."""
    weight = tensors["weight"]
    bias = tensors.get("bias")
    if isinstance(module, nn.Linear):
        new = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    elif isinstance(module, nn.Conv2d):
        if module.groups != module.in_channels or module.groups != module.out_channels:
            raise ValueError(f"only depthwise convolutions are pruned, got {module}")
        n = weight.shape[0]
        new = nn.Conv2d(
            n, n, module.kernel_size, module.stride, module.padding, module.dilation,
            groups=n, bias=bias is not None,
        )  # fmt: skip
    elif isinstance(module, nn.LayerNorm):
        new = nn.LayerNorm(weight.shape[0], eps=module.eps)
    else:
        raise ValueError(f"cannot resize a {type(module).__name__}")
    with torch.no_grad():
        new.weight.copy_(weight)
        if bias is not None:
            new.bias.copy_(bias)
    return new.to(module.weight.device)


def prune_in_place(model: nn.Module, groups: list[Group], keep: dict[str, Tensor]) -> None:
    """Cut every group in `keep` down to its kept units: its Linears, depthwise convs and
    tables are replaced by smaller ones and the unit counts (`num_heads`, ...) updated."""
    params = {n: p.detach() for n, p in model.named_parameters()}
    sliced = slice_state(params, groups, keep)
    changed = {name for g in groups if g.key in keep for name in (e.name for e in g.entries)}
    by_module: dict[str, dict[str, Tensor]] = {}
    for name in changed:
        path, _, attr = name.rpartition(".")
        by_module.setdefault(path, {})[attr] = sliced[name]
    for path, tensors in by_module.items():
        module = model.get_submodule(path)
        if isinstance(module, (nn.Linear, nn.Conv2d, nn.LayerNorm)):
            full = {n: sliced[f"{path}.{n}"] for n, _ in module.named_parameters()}
            parent, _, child = path.rpartition(".")
            setattr(model.get_submodule(parent), child, resized_module(module, full))
        else:  # a raw table on the attention module itself
            for attr, tensor in tensors.items():
                setattr(module, attr, nn.Parameter(tensor.clone()))
    for g in groups:
        if g.key in keep and g.count_attr is not None:
            path, attr = g.count_attr
            setattr(model.get_submodule(path), attr, len(keep[g.key]))
