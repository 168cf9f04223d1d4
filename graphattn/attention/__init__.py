"""Attention primitives: the four choices on an edge and the layer that combines them."""
from .layer import AttentionInfo, AttentionWeights, GraphAttention
from .messages import IdentityMessage, Message, ValueMessage
from .normalizers import DstSoftmax, NoNorm, Normalizer, SigmoidGate, SrcSoftmax, masked_softmax
from .scores import AdditiveScore, DotProductScore, RelationalScore, Score
from .updates import (Aggregate, BiInteractionUpdate, GCNUpdate, Projection, Residual, SAGEUpdate,
                      Update)

__all__ = [
    "GraphAttention", "AttentionInfo", "AttentionWeights",
    "Score", "DotProductScore", "AdditiveScore", "RelationalScore",
    "Normalizer", "DstSoftmax", "SrcSoftmax", "SigmoidGate", "NoNorm", "masked_softmax",
    "Message", "ValueMessage", "IdentityMessage",
    "Update", "Aggregate", "Projection", "Residual", "GCNUpdate", "SAGEUpdate", "BiInteractionUpdate",
]
