"""Official LITv2 and DAT checkpoints (their repositories' key names) onto lightattn's models.

LITv2 (ziplab/LITv2, classification) maps exactly: HiLo's h_*/l_* layers, the DWMlp, and
DTM's deformable conv, offset conv and BatchNorm. DAT (LeapLabTHU/DAT, the CVPR 2022 code)
maps every weight, but the model is not numerically the release: lightattn's shifted windows
shift by 3 (DAT: 4) and its deformable attention samples with align_corners=False (DAT:
True), so outputs differ; fine-tune after loading.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from .timm import check_keys, unwrap

LITV2_ATTN = {
    "h_qkv": "hifi_qkv",
    "h_proj": "hifi_proj",
    "l_q": "lofi_q",
    "l_kv": "lofi_kv",
    "l_proj": "lofi_proj",
}


def litv2_key(key: str) -> str:
    """Official LITv2 name -> lightattn's name."""
    key = re.sub(
        r"^layers\.(\d+)\.downsample\.", lambda m: f"stages.{int(m[1]) + 1}.downsample.", key
    )
    key = re.sub(r"^layers\.", "stages.", key)
    key = key.replace("downsample.dconv.conv_offset.", "downsample.conv.offset.")
    key = key.replace("downsample.dconv.", "downsample.conv.")
    key = key.replace("downsample.norm_layer.", "downsample.norm.")
    key = key.replace("mlp.dwconv.dwconv.", "mlp.dwconv.")
    pattern = r"\.attn\.(h_qkv|h_proj|l_q|l_kv|l_proj)\."
    return re.sub(pattern, lambda m: f".attn.{LITV2_ATTN[m[1]]}.", key)


def convert_litv2_state_dict(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """An official LITv2 classification checkpoint under lightattn's names."""
    return {litv2_key(k): v for k, v in unwrap(state_dict).items()}


DAT_RENAMES = (
    (r"^patch_proj\.0\.", "patch_embed.proj."),
    (r"^patch_proj\.1\.norm\.", "patch_embed.norm."),
    (r"^down_projs\.(\d+)\.0\.", lambda m: f"stages.{int(m[1]) + 1}.downsample.proj."),
    (r"^down_projs\.(\d+)\.1\.norm\.", lambda m: f"stages.{int(m[1]) + 1}.downsample.norm."),
    (r"^cls_norm\.norm\.", "norm."),
    (r"^cls_head\.", "head."),
    (r"^stages\.(\d+)\.mlps\.(\d+)\.chunk\.linear(\d)\.", r"stages.\1.blocks.\2.mlp.fc\3."),
    (
        r"^stages\.(\d+)\.layer_norms\.(\d+)\.norm\.",
        lambda m: f"stages.{m[1]}.blocks.{int(m[2]) // 2}.norm{int(m[2]) % 2 + 1}.",
    ),
    (r"^stages\.(\d+)\.attns\.(\d+)\.", r"stages.\1.blocks.\2.attn."),
)
DAT_ATTN = {
    "proj_qkv": "qkv",
    "proj_out": "proj",
    "relative_position_bias_table": "rel_pos_table",
    "proj_q": "q",
    "conv_offset.0": "offset_conv",
    "conv_offset.1.norm": "offset_norm",
    "conv_offset.3": "offset_proj",
    "rpe_table": "rpb_table",
}
DAT_SKIPPED = ("relative_position_index", "attn_mask")


def dat_key(key: str) -> str:
    for pattern, new in DAT_RENAMES:
        key = re.sub(pattern, new, key)
    prefix, sep, rest = key.partition(".attn.")
    if sep:
        for old, new in DAT_ATTN.items():
            if rest.startswith(old + ".") or rest == old:
                rest = new + rest[len(old) :]
                break
    return prefix + sep + rest


def as_linear(weight: Tensor) -> Tensor:
    """A 1x1 conv weight (C', C, 1, 1) as a Linear weight (C', C)."""
    return weight.flatten(1) if weight.dim() == 4 and weight.shape[-2:] == (1, 1) else weight


def convert_dat_state_dict(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """An official DAT (CVPR 2022) checkpoint under lightattn's names: 1x1-conv projections
    become Linear weights, the separate k and v projections one `kv` Linear."""
    out: dict[str, Tensor] = {}
    for key, value in unwrap(state_dict).items():
        if key.endswith(DAT_SKIPPED):
            continue
        new = dat_key(key)
        if re.search(r"\.attn\.(q|proj|offset_proj|proj_k|proj_v)\.", new):
            value = as_linear(value)
        out[new] = value
    for key in [k for k in out if ".attn.proj_k." in k]:
        k, v = out.pop(key), out.pop(key.replace(".proj_k.", ".proj_v."))
        out[key.replace(".proj_k.", ".kv.")] = torch.cat([k, v], dim=0)
    return out


def load_official_state_dict(
    model: nn.Module, state_dict: Mapping[str, Tensor], kind: str
) -> nn.Module:
    """Load an official `kind` = "litv2" or "dat" checkpoint into the lightattn model of the
    same configuration, strictly (ValueError naming mismatched keys). Returns the model."""
    converters = {"litv2": convert_litv2_state_dict, "dat": convert_dat_state_dict}
    if kind not in converters:
        raise ValueError(f"kind={kind!r} is not one of {tuple(converters)}")
    converted = converters[kind](state_dict)
    check_keys(model, converted)
    model.load_state_dict(converted, strict=True)
    return model
