r"""MMoE: Modeling Task Relationships in Multi-task Learning with Multi-gate Mixture-of-Experts
(Ma et al., KDD 2018, https://doi.org/10.1145/3219819.3220007).

.. math::
    x = [\mathrm{flatten}(C);\ \mathrm{pool}(S_1); \dots; \mathrm{pool}(S_F)],\quad
    g^i(x) = \mathrm{softmax}(W_{g^i} x),\quad f^i(x) = \sum_{k=1}^{E} g^i_k(x)\, f_k(x),\quad
    y_i = \sigma(h^i(f^i(x)))

with ``E`` expert MLPs ``f_k``, one linear softmax gate and one tower ``h^i`` per task, and ``pool`` the masked
mean of a behaviour sequence's embeddings (the same input as ``SharedBottom``).

Args (config keys, defaults in ``recsys/multitask/model/MMoE.yaml`` and the task's overall.yaml):
    embedding_size (16), num_experts (4), expert_hidden ([128, 64]), tower_hidden ([64]), dropout (0.0),
    task_weights (null).

Shapes:
    forward(batch) -> logits (B, T); gates(batch) -> (B, T, E) expert weights per task
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from graphattn.registry import register_model

from .base import FeatureEmbedding, MultiTaskModel, mlp
from .data import MultiTaskData
from .shared_bottom import pooled_input

__all__ = ["MMoE"]


@register_model("MMoE", task="multitask")
class MMoE(MultiTaskModel):
    __doc__ = __doc__

    def __init__(self, config: Mapping[str, Any], data: MultiTaskData):
        super().__init__(config, data)
        d = int(config["embedding_size"])
        self.embedding = FeatureEmbedding(data, d, init_std=float(config["embedding_init_std"]))
        in_dim = (self.embedding.num_fields + self.embedding.num_seq_types) * d
        hidden = list(config["expert_hidden"])
        if not hidden:
            raise ValueError("expert_hidden must list at least one width")
        n_experts = int(config["num_experts"])
        if n_experts < 1:
            raise ValueError(f"num_experts must be >= 1, got {n_experts}")
        dropout = float(config["dropout"])
        self.experts = nn.ModuleList([mlp(in_dim, hidden, None, dropout) for _ in range(n_experts)])
        self.gates = nn.Linear(in_dim, self.num_tasks * n_experts)
        self.n_experts = n_experts
        self.towers = nn.ModuleList([mlp(hidden[-1], list(config["tower_hidden"]), 1, dropout)
                                     for _ in range(self.num_tasks)])

    def _mix(self, batch: Mapping[str, Any]) -> tuple[Tensor, Tensor]:
        x = pooled_input(self.embedding, batch)                                     # (B, D)
        experts = torch.stack([e(x) for e in self.experts], dim=1)                  # (B, E, h)
        gates = self.gates(x).view(-1, self.num_tasks, self.n_experts).softmax(-1)  # (B, T, E)
        return torch.einsum("bte,beh->bth", gates, experts), gates

    def gate_weights(self, batch: Mapping[str, Any]) -> Tensor:
        return self._mix(batch)[1]

    def forward(self, batch: Mapping[str, Any]) -> Tensor:
        mixed, _ = self._mix(batch)
        return torch.cat([tower(mixed[:, i]) for i, tower in enumerate(self.towers)], dim=1)
