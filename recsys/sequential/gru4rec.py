r"""GRU4Rec — "Session-based Recommendations with Recurrent Neural Networks" (Hidasi, Karatzoglou,
Baltrunas, Tikk; ICLR 2016), https://arxiv.org/abs/1511.06939.

.. math::
    h_t = \mathrm{GRU}(e_{s_t}, h_{t-1}),\quad p(i \mid s_{1..t}) = \mathrm{softmax}_i\big((W h_t)^\top e_i\big)

Deviation from the paper: full-softmax cross-entropy over all items on whole user histories (RecBole's
GRU4Rec with ``loss_type: CE``) instead of session-parallel mini-batches with sampled ranking losses; the
output layer is tied to the item embeddings through the projection ``W``. A recurrent baseline has no
attention, so it uses no graphattn layer.

Args (config keys, defaults in ``recsys/sequential/model/GRU4Rec.yaml``):
    embedding_size (64), hidden_size (128), num_layers (1), dropout (0.2).

Shapes:
    items (B, L) right-padded -> (B, L, d); full_sort_predict -> (B, n_items).
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor, nn

from graphattn.registry import register_model

from .base import SequentialRecommender, full_softmax_ce, gather_last, next_item_pairs
from .data import SeqData

__all__ = ["GRU4Rec"]


@register_model("GRU4Rec", task="sequential")
class GRU4Rec(SequentialRecommender):
    __doc__ = __doc__

    def __init__(self, config: Mapping[str, Any], data: SeqData):
        super().__init__(config, data)
        d, hidden = int(config["embedding_size"]), int(config["hidden_size"])
        self.item_emb = nn.Embedding(self.n_items + 1, d, padding_idx=self.pad)
        self.drop = nn.Dropout(float(config["dropout"]))
        self.gru = nn.GRU(d, hidden, num_layers=int(config["num_layers"]), batch_first=True)
        self.proj = nn.Linear(hidden, d)
        nn.init.normal_(self.item_emb.weight, std=0.02)
        with torch.no_grad():
            self.item_emb.weight[self.pad].zero_()

    def forward(self, items: Tensor, lengths: Tensor) -> Tensor:
        """Hidden state at every position ``(B, L, d)``; right padding never reaches earlier positions."""
        out, _ = self.gru(self.drop(self.item_emb(items)))
        return self.proj(out)

    def calculate_loss(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        inputs, in_len, targets, valid = next_item_pairs(batch)
        loss = full_softmax_ce(self.forward(inputs, in_len), self.item_emb.weight[:self.n_items], targets, valid)
        return loss, {"ce": loss.item()}

    def full_sort_predict(self, batch: dict[str, Tensor]) -> Tensor:
        hidden = gather_last(self.forward(batch["items"], batch["lengths"]), batch["lengths"])
        return hidden @ self.item_emb.weight[:self.n_items].T
