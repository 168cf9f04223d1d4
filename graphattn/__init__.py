"""graphattn: every model is attention-weighted message passing over a typed graph."""
from . import ops
from .attention import GraphAttention
from .ops import edge_softmax, segment_max, segment_mean, segment_softmax, segment_sum

__version__ = "0.1.0"
__all__ = ["ops", "GraphAttention", "edge_softmax", "segment_sum", "segment_mean", "segment_max",
           "segment_softmax", "__version__"]
