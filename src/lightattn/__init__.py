"""lightattn: lightweight self-attention for vision models, behind one contract."""

from . import models
from .layers import AttentionBase, create_attention, list_attention, register_attention
from .layers.castling import apply_aux_schedule, aux_weight_schedule, switch_to_inference
from .models import create_model, list_models

__version__ = "0.1.0"
__all__ = [
    "AttentionBase",
    "apply_aux_schedule",
    "aux_weight_schedule",
    "create_attention",
    "create_model",
    "list_attention",
    "list_models",
    "models",
    "register_attention",
    "switch_to_inference",
]
