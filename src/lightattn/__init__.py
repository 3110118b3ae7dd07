"""lightattn: lightweight self-attention for vision models, behind one contract."""

from .layers import AttentionBase, create_attention, list_attention, register_attention

__version__ = "0.1.0"
__all__ = ["AttentionBase", "create_attention", "list_attention", "register_attention"]
