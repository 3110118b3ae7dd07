"""Backbones built from the registered attention mechanisms: Swin, PVTv2, LITv2, DAT and
ACmix-Swin, any attention swappable by name, timm checkpoints loadable.

    lightattn.list_models()                       # named, published architectures
    m = lightattn.create_model("swin_t", num_classes=10)
    m = lightattn.create_model("swin_t", attn="hilo", attn_kwargs={"alpha": 0.9})
    feats = lightattn.create_model("pvt_v2_b1", features_only=True)(images)  # 4 maps
    lightattn.models.load_timm_state_dict(m, timm_state_dict)
"""

from . import acmix_swin, dat, litv2, pvt_v2, swin  # noqa: F401  (register the families)
from ._registry import (
    ModelEntry,
    Published,
    create_model,
    list_families,
    list_models,
    model_entry,
    register_family,
    register_model,
)
from .backbone import AttnSpec, Backbone, StageSpec, swap_attention
from .official import convert_dat_state_dict, convert_litv2_state_dict, load_official_state_dict
from .timing import Timing, model_rows, time_model
from .timm import convert_timm_state_dict, load_timm_state_dict

__all__ = [
    "AttnSpec",
    "Backbone",
    "ModelEntry",
    "Published",
    "StageSpec",
    "Timing",
    "convert_dat_state_dict",
    "convert_litv2_state_dict",
    "convert_timm_state_dict",
    "create_model",
    "list_families",
    "list_models",
    "load_official_state_dict",
    "load_timm_state_dict",
    "model_entry",
    "model_rows",
    "register_family",
    "register_model",
    "swap_attention",
    "time_model",
]
