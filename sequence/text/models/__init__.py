"""Models of task ``text_classification`` (importing a file registers its model)."""
from .bilstm_attention import BiLSTMAttn
from .cls_transformer import CLSTransformer

__all__ = ["BiLSTMAttn", "CLSTransformer"]
