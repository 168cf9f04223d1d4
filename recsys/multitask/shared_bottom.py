r"""Shared-Bottom multi-task model (Caruana, "Multitask Learning", Machine Learning 28, 1997,
https://doi.org/10.1023/A:1007379606734), as the multi-task baseline of the INFNet paper.

.. math::
    x = [\mathrm{flatten}(C);\ \mathrm{pool}(S_1); \dots; \mathrm{pool}(S_F)],\quad
    h = \mathrm{MLP}_{bottom}(x),\quad y_i = \sigma(\mathrm{MLP}_i(h))

with ``pool`` the masked mean of a behaviour sequence's embeddings (padding excluded).

Args (config keys, defaults in ``recsys/multitask/model/SharedBottom.yaml`` and the task's overall.yaml):
    embedding_size (16), bottom_hidden ([128, 64]), tower_hidden ([64]), dropout (0.0), task_weights (null).

Shapes:
    forward(batch) with batch["cat"] (B, M), batch["seq"] F x (B, n_a) -> logits (B, T)
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from graphattn.registry import register_model

from .base import FeatureEmbedding, MultiTaskModel, masked_pool, mlp
from .data import MultiTaskData

__all__ = ["SharedBottom", "pooled_input"]


def pooled_input(embedding: FeatureEmbedding, batch: Mapping[str, Any]) -> Tensor:
    """``[flatten(C); mean-pooled S_1; ...; S_F]`` -> (B, (M + F) d)."""
    c, s, mask = embedding(batch)
    parts = [c.flatten(1)]
    for a in range(embedding.num_seq_types):
        sel = embedding.seq_type == a
        parts.append(masked_pool(s[:, sel], mask[:, sel], "mean"))
    return torch.cat(parts, dim=1)


@register_model("SharedBottom", task="multitask")
class SharedBottom(MultiTaskModel):
    __doc__ = __doc__

    def __init__(self, config: Mapping[str, Any], data: MultiTaskData):
        super().__init__(config, data)
        d = int(config["embedding_size"])
        self.embedding = FeatureEmbedding(data, d, init_std=float(config["embedding_init_std"]))
        in_dim = (self.embedding.num_fields + self.embedding.num_seq_types) * d
        hidden = list(config["bottom_hidden"])
        dropout = float(config["dropout"])
        self.bottom = mlp(in_dim, hidden, None, dropout)
        out = hidden[-1] if hidden else in_dim
        self.towers = torch.nn.ModuleList([mlp(out, list(config["tower_hidden"]), 1, dropout)
                                           for _ in range(self.num_tasks)])

    def forward(self, batch: Mapping[str, Any]) -> Tensor:
        h = self.bottom(pooled_input(self.embedding, batch))
        return torch.cat([tower(h) for tower in self.towers], dim=1)
