"""Sequence models, one per file. Each import line below registers a model (``@register_model``)."""
from .pointer_net import PointerNet

__all__ = ["PointerNet"]
