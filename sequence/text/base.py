"""What every model of task ``text_classification`` is: :class:`TextClassifier`."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from graphattn.attention import GraphAttention

from .data import TextData

__all__ = ["TextClassifier"]


class TextClassifier(nn.Module):
    """Base of binary text classifiers whose decision passes through one attention readout over the tokens.

    A subclass sets ``self.readout`` (the :class:`GraphAttention` whose weights over the tokens, shape
    ``(B, H, 1, T)`` on the dense path, are read as token importance) and implements :meth:`embed`,
    :meth:`encode` (the part before any attention layer; default: the embeddings) and :meth:`decide` (the
    rest). Splitting them lets saliency take the gradient with respect to the embeddings, and lets
    adversarial training on the attention scores run the encoder once per batch: the encoder does not see
    the score perturbation, so the clean and the perturbed pass share its output (and its backward).

    Shapes: batch["tokens"] (B, T) int64, batch["mask"] (B, T) bool -> logits (B,) (positive class).
    """

    readout: GraphAttention

    def __init__(self, config: Mapping[str, Any], data: TextData) -> None:
        super().__init__()
        self.vocab_size, self.max_len = int(data.vocab_size), int(data.max_len)

    def embed(self, tokens: Tensor) -> Tensor:
        """``(B, T)`` token ids -> ``(B, T, E)`` embeddings."""
        raise NotImplementedError

    def encode(self, emb: Tensor, mask: Tensor) -> Tensor:
        """``(B, T, E)`` embeddings -> ``(B, T, F)`` token states, before any attention layer."""
        return emb

    def decide(self, states: Tensor, mask: Tensor) -> Tensor:
        """``(B, T, F)`` token states and ``(B, T)`` mask -> ``(B,)`` logits (every attention layer is in here)."""
        raise NotImplementedError

    def classify(self, emb: Tensor, mask: Tensor) -> Tensor:
        """``(B, T, E)`` embeddings and ``(B, T)`` mask -> ``(B,)`` logits."""
        return self.decide(self.encode(emb, mask), mask)

    def forward(self, batch: Mapping[str, Tensor]) -> Tensor:
        tokens, mask = batch["tokens"], batch["mask"]
        if tokens.dim() != 2 or mask.shape != tokens.shape:
            raise ValueError(f"tokens and mask must both be (B, T), got {tuple(tokens.shape)} and {tuple(mask.shape)}")
        return self.classify(self.embed(tokens), mask)
