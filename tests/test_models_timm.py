"""timm interop: the shared timm 1.0.31 fixtures reproduced, checkpoint layouts converted, and
the official LITv2 / DAT key names mapped."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from models_helpers import rel_err, tiny

from lightattn.models import create_model
from lightattn.models.official import (
    convert_dat_state_dict,
    convert_litv2_state_dict,
    litv2_key,
    load_official_state_dict,
)
from lightattn.models.timm import load_timm_state_dict, resize_table

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = next(
    (
        p
        for p in (ROOT / "shared/fixtures/timm", ROOT.parent / "shared/fixtures/timm")
        if p.is_dir()
    ),
    None,
)
FAMILY = {"SwinTransformer": "swin", "PyramidVisionTransformerV2": "pvt_v2"}


def read_fixture(stem: str) -> tuple[dict, dict[str, torch.Tensor]]:
    safetensors = pytest.importorskip("safetensors")
    if FIXTURES is None:
        pytest.skip("shared/fixtures/timm not found")
    with safetensors.safe_open(FIXTURES / f"{stem}.safetensors", "pt") as f:
        return f.metadata(), {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118


def fixture_model(stem: str) -> tuple[torch.nn.Module, dict[str, torch.Tensor], dict]:
    """The lightattn model of the fixture's class and kwargs, the timm state and tensors."""
    meta, tensors = read_fixture(stem)
    model = create_model(FAMILY[meta["class"]], **json.loads(meta["kwargs"])).eval()
    state = {k.removeprefix("state."): v for k, v in tensors.items() if k.startswith("state.")}
    return model, state, tensors


@pytest.mark.parametrize("stem", ["timm_swin_mini", "timm_pvt_v2_mini"])
def test_timm_fixture_features_and_logits_are_reproduced(stem):
    model, state, tensors = fixture_model(stem)
    load_timm_state_dict(model, state)
    with torch.no_grad():
        features = model.forward_features(tensors["input"])
        logits = model(tensors["input"])
    assert rel_err(features, tensors["features"]) < 1e-5
    assert rel_err(logits, tensors["logits"]) < 1e-5


def test_official_swin_layout_loads_the_same():
    """Microsoft's Swin checkpoints merge patches at the end of a stage and name the head
    `head`; renamed that way, the fixture still reproduces."""
    model, state, tensors = fixture_model("timm_swin_mini")
    old = {}
    for key, value in state.items():
        key = re.sub(
            r"^layers\.(\d+)\.downsample", lambda m: f"layers.{int(m[1]) - 1}.downsample", key
        )
        old[key.replace("head.fc.", "head.")] = value
    old["layers.0.blocks.0.attn.relative_position_index"] = torch.zeros(49, 49, dtype=torch.long)
    load_timm_state_dict(model, {"model": old})
    with torch.no_grad():
        assert rel_err(model(tensors["input"]), tensors["logits"]) < 1e-5


def test_a_checkpoint_of_another_configuration_is_refused_naming_keys():
    _, state, _ = fixture_model("timm_pvt_v2_mini")
    other = create_model("pvt_v2", embed_dims=(16, 32, 64, 128), depths=(1, 1, 1, 1))
    with pytest.raises(ValueError, match="unexpected .*stages.2.blocks.1"):
        load_timm_state_dict(other, state)
    with pytest.raises(ValueError, match="not a timm Swin or PVTv2"):
        load_timm_state_dict(other, {"foo.weight": torch.zeros(1)})


def test_relative_table_of_a_clipped_window_is_centred():
    """timm clips a window to a small map and builds a (2r-1)² table; centred in the full
    (2ws-1)² table, the window reads the same bias for every offset."""
    r, ws, heads = 7, 12, 3
    small = torch.randn((2 * r - 1) ** 2, heads)
    big = resize_table(small, (2 * ws - 1) ** 2)
    small_grid = small.T.reshape(heads, 2 * r - 1, 2 * r - 1)
    big_grid = big.T.reshape(heads, 2 * ws - 1, 2 * ws - 1)
    for dy, dx in [(0, 0), (-6, 6), (3, -2), (6, 6)]:
        torch.testing.assert_close(
            big_grid[:, dy + ws - 1, dx + ws - 1], small_grid[:, dy + r - 1, dx + r - 1]
        )
    assert big_grid[:, 0].abs().sum() == 0
    torch.testing.assert_close(resize_table(big, small.shape[0]), small)


# -- official LITv2 / DAT key names --------------------------------------------------------------

LITV2_OFFICIAL = {  # a sample of ziplab/LITv2 classification names and lightattn's
    "patch_embed.proj.weight": "patch_embed.proj.weight",
    "layers.0.blocks.0.norm2.weight": "stages.0.blocks.0.norm2.weight",
    "layers.0.blocks.1.mlp.dwconv.dwconv.weight": "stages.0.blocks.1.mlp.dwconv.weight",
    "layers.0.downsample.dconv.weight": "stages.1.downsample.conv.weight",
    "layers.1.downsample.dconv.conv_offset.bias": "stages.2.downsample.conv.offset.bias",
    "layers.2.downsample.norm_layer.running_var": "stages.3.downsample.norm.running_var",
    "layers.2.blocks.3.attn.h_qkv.weight": "stages.2.blocks.3.attn.hifi_qkv.weight",
    "layers.2.blocks.3.attn.l_kv.bias": "stages.2.blocks.3.attn.lofi_kv.bias",
    "layers.3.blocks.1.attn.l_proj.weight": "stages.3.blocks.1.attn.lofi_proj.weight",
    "norm.weight": "norm.weight",
    "head.bias": "head.bias",
}


def test_litv2_official_names_map_to_lightattn():
    for official, ours in LITV2_OFFICIAL.items():
        assert litv2_key(official) == ours


def to_official_litv2(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """lightattn names -> the official ones (the inverse of the documented renames)."""
    out = {}
    for key, value in state.items():
        key = re.sub(
            r"^stages\.(\d+)\.downsample", lambda m: f"layers.{int(m[1]) - 1}.downsample", key
        )
        key = key.replace("stages.", "layers.").replace(".conv.offset.", ".dconv.conv_offset.")
        key = key.replace("downsample.conv.", "downsample.dconv.")
        key = key.replace("downsample.norm.", "downsample.norm_layer.")
        key = key.replace("mlp.dwconv.", "mlp.dwconv.dwconv.")
        for ours, theirs in [("hifi_", "h_"), ("lofi_", "l_")]:
            key = key.replace(f"attn.{ours}", f"attn.{theirs}")
        out[key] = value
    return out


def test_litv2_official_checkpoint_round_trip_is_exact():
    source = tiny("litv2_s", num_classes=5, seed=1).eval()
    target = tiny("litv2_s", num_classes=5, seed=2).eval()
    official = to_official_litv2(source.state_dict())
    assert convert_litv2_state_dict(official).keys() == source.state_dict().keys()
    load_official_state_dict(target, {"model": official}, "litv2")
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(target(x), source(x))


DAT_NAMES = {
    "qkv": "proj_qkv",
    "proj": "proj_out",
    "q": "proj_q",
    "offset_conv": "conv_offset.0",
    "offset_norm": "conv_offset.1.norm",
    "offset_proj": "conv_offset.3",
    "rel_pos_table": "relative_position_bias_table",
    "rpb_table": "rpe_table",
}


def to_official_dat_attn(prefix: str, name: str, leaf: str, value, deformable: bool) -> dict:
    """One attention entry under DAT's names: 1x1-conv weights, proj_k and proj_v."""
    conv = deformable and leaf == "weight"
    if name == "kv":
        k, v = value.chunk(2, dim=0)
        if conv:
            k, v = k[..., None, None], v[..., None, None]
        return {f"{prefix}proj_k.{leaf}": k, f"{prefix}proj_v.{leaf}": v}
    if conv and name in ("q", "proj", "offset_proj"):
        value = value[..., None, None]
    return {prefix + ".".join(filter(None, (DAT_NAMES[name], leaf))): value}


def to_official_dat(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """lightattn names -> DAT's (CVPR 2022 code)."""
    renames = [
        (r"^patch_embed\.proj\.", "patch_proj.0."),
        (r"^patch_embed\.norm\.", "patch_proj.1.norm."),
        (r"^stages\.(\d+)\.downsample\.proj\.", lambda m: f"down_projs.{int(m[1]) - 1}.0."),
        (r"^stages\.(\d+)\.downsample\.norm\.", lambda m: f"down_projs.{int(m[1]) - 1}.1.norm."),
        (r"^norm\.", "cls_norm.norm."),
        (r"^head\.", "cls_head."),
        (r"^stages\.(\d+)\.blocks\.(\d+)\.mlp\.fc(\d)\.", r"stages.\1.mlps.\2.chunk.linear\3."),
        (
            r"^stages\.(\d+)\.blocks\.(\d+)\.norm(\d)\.",
            lambda m: f"stages.{m[1]}.layer_norms.{2 * int(m[2]) + int(m[3]) - 1}.norm.",
        ),
    ]
    out = {}
    for key, value in state.items():
        attn = re.match(r"^stages\.(\d+)\.blocks\.(\d+)\.attn\.(\w+)\.?(\w*)$", key)
        if attn:
            s, b, name, leaf = attn.groups()
            deformable = f"stages.{s}.blocks.{b}.attn.offset_conv.weight" in state
            prefix = f"stages.{s}.attns.{b}."
            out.update(to_official_dat_attn(prefix, name, leaf, value, deformable))
            continue
        for pattern, new in renames:
            key = re.sub(pattern, new, key)
        out[key] = value
    return out


def test_dat_official_checkpoint_round_trip_is_exact():
    """1x1-conv weights squeezed to Linear weights, proj_k and proj_v joined into kv."""
    source = tiny("dat_t", num_classes=5, seed=1).eval()
    target = tiny("dat_t", num_classes=5, seed=2).eval()
    official = to_official_dat(source.state_dict())
    assert "stages.2.attns.1.proj_k.weight" in official
    assert official["stages.2.attns.1.proj_q.weight"].dim() == 4
    assert "stages.0.layer_norms.3.norm.bias" in official
    load_official_state_dict(target, official, "dat")
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(target(x), source(x))
    assert set(convert_dat_state_dict(official)) == set(source.state_dict())


def test_official_loader_refuses_an_unknown_kind():
    with pytest.raises(ValueError, match="kind='deit'"):
        load_official_state_dict(tiny("dat_t"), {}, "deit")
