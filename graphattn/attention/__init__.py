"""Attention primitives: the four choices on an edge and the layer that combines them."""
from .layer import AttentionInfo, AttentionWeights, GraphAttention
from .linear import (HeadSplitMessage, KernelNormalizer, KernelScore, LinearAttention, elu_feature_map,
                     linear_attention_star)
from .messages import IdentityMessage, Message, ValueMessage
from .moh import MoHAttention, MoHRouting, load_balance_loss
from .neighborhood import NeighborhoodAttention, neighborhood_groups
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
    "NeighborhoodAttention", "neighborhood_groups", "MoHAttention", "MoHRouting", "load_balance_loss",
    "LinearAttention", "KernelScore", "KernelNormalizer", "HeadSplitMessage", "linear_attention_star",
    "elu_feature_map",
]
