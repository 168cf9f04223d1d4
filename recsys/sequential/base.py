"""What the sequential task (:mod:`recsys.sequential.task`) expects from a model, and the next-item pieces the baselines share."""
from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .data import SeqData

__all__ = ["SequentialRecommender", "next_item_pairs", "gather_last"]


class SequentialRecommender(nn.Module):
    """Base class of task ``sequential``: ``Model(config, data)``.

    Subclasses implement

    - ``calculate_loss(batch) -> (loss, parts)`` on a training batch of :meth:`SeqData.train_batches`
      (``parts``: float values logged per epoch);
    - ``full_sort_predict(batch) -> (B, n_items)`` scores on an evaluation batch of
      :meth:`SeqData.eval_batch` (the item to rank is the one consumed at ``batch["target_time"]``).
    """

    def __init__(self, config: Mapping[str, Any], data: SeqData):
        super().__init__()
        self.n_items = data.n_items
        self.pad = data.pad
        self.n_users = data.n_users
        self.max_len = int(config["max_len"])

    def calculate_loss(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        raise TypeError(f"{type(self).__name__} must define calculate_loss(batch)")

    def full_sort_predict(self, batch: dict[str, Tensor]) -> Tensor:
        raise TypeError(f"{type(self).__name__} must define full_sort_predict(batch)")


def next_item_pairs(batch: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Inputs ``items[:, :-1]``, their lengths, targets ``items[:, 1:]`` and the ``(B, L)`` mask of real targets."""
    items, lengths = batch["items"], batch["lengths"]
    inputs, targets = items[:, :-1], items[:, 1:]
    in_len = (lengths - 1).clamp_min(0)
    valid = torch.arange(inputs.shape[1], device=items.device)[None, :] < in_len[:, None]
    return inputs, in_len, targets, valid


def gather_last(hidden: Tensor, lengths: Tensor) -> Tensor:
    """``hidden[b, lengths[b] - 1]`` for right-padded ``(B, L, D)`` states."""
    idx = (lengths - 1).clamp_min(0)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), idx]


def full_softmax_ce(hidden: Tensor, item_emb: Tensor, targets: Tensor, valid: Tensor) -> Tensor:
    """Cross-entropy over all items of ``hidden @ item_emb.T`` at the valid positions."""
    logits = hidden[valid] @ item_emb.T                                            # (n_valid, I)
    return F.cross_entropy(logits, targets[valid])
