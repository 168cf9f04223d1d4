r"""Target attention (DIN-style) multi-task baseline: the candidate item attends over each behaviour sequence.

After DIN (Zhou et al., "Deep Interest Network for Click-Through Rate Prediction", KDD 2018,
https://arxiv.org/abs/1706.06978), one of the INFNet paper's baselines; here it is the diagnostic model of
issue #20: it is Shared-Bottom with the mean-pooled sequences replaced by attention pooling from the target
item, so if it learns the synthetic data's target-in-sequence signal and INFNet does not, the fault is in
INFNet's token flow, not in the data.

.. math::
    w_{a,t} = \mathrm{MLP}_{act}([e;\ s_{a,t};\ e - s_{a,t};\ e \odot s_{a,t}]),\quad
    p_a = \sum_t \mathrm{norm}(w)_{a,t}\, s_{a,t},\quad
    h = \mathrm{MLP}_{bottom}([\mathrm{flatten}(C); p_1; \dots; p_F]),\quad y_i = \sigma(\mathrm{MLP}_i(h))

with :math:`e` the embedding of the target (candidate) categorical field, :math:`s_{a,t}` the embedding of
position ``t`` of behaviour sequence ``a`` (padding masked), and the activation unit :math:`\mathrm{MLP}_{act}`
shared by all sequences. The attention is a :class:`graphattn.attention.GraphAttention` with the activation
unit as its score (:class:`ActivationUnitScore`), the item embeddings themselves as messages and no output
projection. ``din_normalizer: none`` keeps DIN's raw (unnormalised) weights, so that the pooled vector's size
says how much of the history matches the candidate; ``sigmoid`` / ``softmax`` are options.

Deviations: the activation unit uses ReLU (DIN uses PReLU / Dice) and no batch-norm; the target field is
picked by config (``target_field``, default: the first categorical field whose vocabulary the sequences use).

Args (config keys, defaults in ``recsys/multitask/model/TargetAttention.yaml`` and the task's overall.yaml):
    embedding_size (16), attention_hidden ([36]), din_normalizer ("none"), target_field (null),
    bottom_hidden ([128, 64]), tower_hidden ([64]), dropout (0.0), task_weights (null).

Shapes:
    forward(batch) with batch["cat"] (B, M), batch["seq"] F x (B, n_a) -> logits (B, T)
    attention_weights(batch) -> (B, L) normalised weight of each sequence position (0 on padding)
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from graphattn.attention import GraphAttention
from graphattn.attention.scores import Score
from graphattn.registry import register_model

from .base import FeatureEmbedding, MultiTaskModel, mlp
from .data import MultiTaskData

__all__ = ["TargetAttention", "ActivationUnitScore", "target_field_index"]


class ActivationUnitScore(Score):
    """DIN's activation unit as an attention score: ``MLP([q; k; q - k; q * k])`` on the raw embeddings
    (one head, no projections).

    Shapes: project: x_dst (..., Nq, d), x_src (..., Nk, d) -> (..., Nq, 1, d), (..., Nk, 1, d);
    edge -> (E, 1); dense: q (B, 1, Nq, d), k (B, 1, Nk, d) -> (B, 1, Nq, Nk)
    """

    def __init__(self, dim: int, hidden: Sequence[int] = (36,)):
        super().__init__()
        self.heads, self.head_dim = 1, dim
        self.mlp = mlp(4 * dim, list(hidden), 1)

    def _score(self, q: Tensor, k: Tensor) -> Tensor:
        return self.mlp(torch.cat([q, k, q - k, q * k], dim=-1)).squeeze(-1)

    def project(self, x_dst, x_src):
        return x_dst.unsqueeze(-2), x_src.unsqueeze(-2)

    def edge(self, q, k, edge_index, edge_type=None):
        return self._score(q.index_select(0, edge_index[1]), k.index_select(0, edge_index[0]))    # (E, 1)

    def dense(self, q, k):
        nq, nk = q.shape[-2], k.shape[-2]
        return self._score(q.unsqueeze(-2).expand(*q.shape[:-1], nk, q.shape[-1]),
                           k.unsqueeze(-3).expand(*k.shape[:-2], nq, nk, k.shape[-1]))           # (B, 1, Nq, Nk)


def target_field_index(data: MultiTaskData, name: str | None) -> int:
    """Column of the candidate field: ``name``, or the first categorical field sharing a sequence vocabulary."""
    if name is not None:
        if name not in data.cat_fields:
            raise ValueError(f"target_field {name!r} is not a categorical field of {data.name!r}: {data.cat_fields}")
        return data.cat_fields.index(name)
    for j, vocab in enumerate(data.cat_vocab):
        if vocab in data.seq_vocab:
            return j
    raise ValueError(f"dataset {data.name!r} has no categorical field sharing a vocabulary with its sequences "
                     f"(cat {dict(zip(data.cat_fields, data.cat_vocab))}, seq {dict(zip(data.seq_fields, data.seq_vocab))}); "
                     "set target_field")


@register_model("TargetAttention", task="multitask")
class TargetAttention(MultiTaskModel):
    __doc__ = __doc__

    def __init__(self, config: Mapping[str, Any], data: MultiTaskData):
        super().__init__(config, data)
        d = int(config["embedding_size"])
        self.embedding = FeatureEmbedding(data, d, init_std=float(config["embedding_init_std"]))
        if not data.seq_fields:
            raise ValueError(f"TargetAttention needs behaviour sequences; dataset {data.name!r} has none")
        self.target = target_field_index(data, config.get("target_field"))
        norm = str(config["din_normalizer"])
        if norm not in ("none", "sigmoid", "softmax"):
            raise ValueError(f"din_normalizer must be 'none', 'sigmoid' or 'softmax', got {norm!r}")
        self.attn = GraphAttention(d, d, 1, src_dim=d, score=ActivationUnitScore(d, list(config["attention_hidden"])),
                                   normalizer=norm, message="identity", update="none")
        in_dim = (self.embedding.num_fields + self.embedding.num_seq_types) * d
        hidden = list(config["bottom_hidden"])
        dropout = float(config["dropout"])
        self.bottom = mlp(in_dim, hidden, None, dropout)
        out = hidden[-1] if hidden else in_dim
        self.towers = nn.ModuleList([mlp(out, list(config["tower_hidden"]), 1, dropout) for _ in range(self.num_tasks)])

    def pooled(self, batch: Mapping[str, Any], return_weights: bool = False):
        c, s, mask = self.embedding(batch)
        query = c[:, self.target:self.target + 1]                                    # (B, 1, d)
        parts, weights = [c.flatten(1)], []
        for a in range(self.embedding.num_seq_types):
            sel = self.embedding.seq_type == a
            y = self.attn(query, x_src=s[:, sel], key_padding_mask=mask[:, sel], return_attention=return_weights)
            if return_weights:
                y, w = y
                weights.append(w.weights[:, 0, 0])                                    # (B, n_a)
            parts.append(y[:, 0])
        x = torch.cat(parts, dim=1)
        return (x, torch.cat(weights, dim=1)) if return_weights else x

    @torch.no_grad()
    def attention_weights(self, batch: Mapping[str, Any]) -> Tensor:
        return self.pooled(batch, return_weights=True)[1]

    def forward(self, batch: Mapping[str, Any]) -> Tensor:
        h = self.bottom(self.pooled(batch))
        return torch.cat([tower(h) for tower in self.towers], dim=1)
