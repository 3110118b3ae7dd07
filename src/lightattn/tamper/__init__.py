"""Tamper localization: `stdc_tamper`, an STDC-Seg network (Fan et al., CVPR 2021) with
DANet's position attention (any registered mechanism inside) and detail guidance.

    from lightattn.tamper import create_tamper_model
    model = create_tamper_model("stdc_tamper", variant="stdc1", inner="linear").eval()
    out = model(images)  # {"mask_logits": (B, 1, H, W), "score_logits": (B,)}
"""

from .network import (
    AttentionRefinement,
    ChannelAttention,
    FeatureFusion,
    OutputHead,
    StdcTamper,
    create_tamper_model,
    detail_loss,
    detail_target,
    dice_loss,
    list_tamper_models,
)
from .stdc import PUBLISHED, VARIANTS, STDCModule, STDCNet

__all__ = [
    "PUBLISHED",
    "VARIANTS",
    "AttentionRefinement",
    "ChannelAttention",
    "FeatureFusion",
    "OutputHead",
    "STDCModule",
    "STDCNet",
    "StdcTamper",
    "create_tamper_model",
    "detail_loss",
    "detail_target",
    "dice_loss",
    "list_tamper_models",
]
