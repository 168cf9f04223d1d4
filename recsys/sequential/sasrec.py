r"""SASRec — "Self-Attentive Sequential Recommendation" (Kang and McAuley, ICDM 2018),
https://arxiv.org/abs/1808.09781.

.. math::
    H^0 = E[s] + P,\quad
    H^{l+1} = \mathrm{LN}\big(A + \mathrm{FFN}(A)\big),\ A = \mathrm{LN}\big(H^l + \mathrm{Attn}_{causal}(H^l)\big),\quad
    p(i \mid s_{1..t}) = \mathrm{softmax}_i(H^L_t{}^\top e_i)

The causal self-attention is :class:`graphattn.attention.GraphAttention`'s dense path with a causal mask
(position ``t`` attends ``1..t``; the causal graph of :func:`graphattn.graphs.causal_graph`) and a key
padding mask. Item embeddings are shared between input and output.

Deviation from the paper: the loss is the full-softmax cross-entropy over all items at every position (as
RecBole's ``loss_type: CE``) instead of binary cross-entropy with one sampled negative; post-LN blocks as in
RecBole's implementation.

Args (config keys, defaults in ``recsys/sequential/model/SASRec.yaml``):
    embedding_size (64), n_layers (2), n_heads (2), inner_size (128), dropout (0.2), attn_dropout (0.2).

Shapes:
    items (B, L) right-padded -> hidden (B, L, d); full_sort_predict -> (B, n_items).
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor, nn

from graphattn.attention import GraphAttention
from graphattn.ops import causal_mask
from graphattn.registry import register_model

from .base import SequentialRecommender, full_softmax_ce, gather_last, next_item_pairs
from .data import SeqData

__all__ = ["SASRec"]


class _Block(nn.Module):
    def __init__(self, dim: int, heads: int, inner: int, dropout: float, attn_dropout: float):
        super().__init__()
        self.attn = GraphAttention(dim, dim, heads=heads, dropout=attn_dropout)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, inner), nn.GELU(), nn.Dropout(dropout), nn.Linear(inner, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor, padding: Tensor) -> Tensor:
        x = self.norm1(x + self.drop(self.attn(x, mask=mask, key_padding_mask=padding)))
        return self.norm2(x + self.drop(self.ffn(x)))


@register_model("SASRec", task="sequential")
class SASRec(SequentialRecommender):
    __doc__ = __doc__

    def __init__(self, config: Mapping[str, Any], data: SeqData):
        super().__init__(config, data)
        d = int(config["embedding_size"])
        self.item_emb = nn.Embedding(self.n_items + 1, d, padding_idx=self.pad)
        self.pos_emb = nn.Embedding(self.max_len + 1, d)
        self.blocks = nn.ModuleList(
            _Block(d, int(config["n_heads"]), int(config["inner_size"]), float(config["dropout"]),
                   float(config["attn_dropout"])) for _ in range(int(config["n_layers"])))
        self.norm = nn.LayerNorm(d)
        self.drop = nn.Dropout(float(config["dropout"]))
        nn.init.normal_(self.item_emb.weight, std=0.02)
        nn.init.normal_(self.pos_emb.weight, std=0.02)
        with torch.no_grad():
            self.item_emb.weight[self.pad].zero_()

    def forward(self, items: Tensor, lengths: Tensor) -> Tensor:
        """Hidden state at every position ``(B, L, d)``; position ``t`` depends only on ``items[:, :t+1]``."""
        n = items.shape[1]
        if n > self.pos_emb.num_embeddings:
            raise ValueError(f"sequence length {n} exceeds max_len + 1 = {self.pos_emb.num_embeddings}")
        pos = torch.arange(n, device=items.device)
        x = self.drop(self.norm(self.item_emb(items) + self.pos_emb(pos)[None]))
        padding = pos[None, :] < lengths[:, None]                                  # (B, L) True = real item
        mask = causal_mask(n).to(items.device)
        for block in self.blocks:
            x = block(x, mask, padding)
        return x

    def calculate_loss(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        inputs, in_len, targets, valid = next_item_pairs(batch)
        hidden = self.forward(inputs, in_len)
        loss = full_softmax_ce(hidden, self.item_emb.weight[:self.n_items], targets, valid)
        return loss, {"ce": loss.item()}

    def full_sort_predict(self, batch: dict[str, Tensor]) -> Tensor:
        hidden = gather_last(self.forward(batch["items"], batch["lengths"]), batch["lengths"])
        return hidden @ self.item_emb.weight[:self.n_items].T
