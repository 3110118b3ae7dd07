"""lightattn: lightweight self-attention for vision models, behind one contract."""

from .layers import AttentionBase, create_attention, list_attention, register_attention
from .layers.castling import apply_aux_schedule, aux_weight_schedule, switch_to_inference

__version__ = "0.1.0"
__all__ = [
    "AttentionBase",
    "apply_aux_schedule",
    "aux_weight_schedule",
    "create_attention",
    "list_attention",
    "register_attention",
    "switch_to_inference",
]
