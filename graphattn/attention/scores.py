"""Scores: the raw weight of an edge ``j -> i`` (first of the four choices on an edge).

A score owns the projections it needs. ``project(x_dst, x_src)`` maps node features to per-head query and
key tensors ``(..., N, H, Dh)``; ``edge`` scores a list of edges (sparse path) and ``dense`` scores every
query/key pair of a token batch (dense path). Scores with ``sdpa = True`` are scaled dot products, which the
dense path may hand to ``torch.nn.functional.scaled_dot_product_attention``.
"""
from __future__ import annotations

from abc import ABCMeta, abstractmethod

import math

import torch
from torch import Tensor, nn

from ..ops import typed_linear

__all__ = ["Score", "DotProductScore", "AdditiveScore", "RelationalScore"]


class Score(nn.Module, metaclass=ABCMeta):
    """Base class. Subclasses implement ``project`` and ``edge``, and ``dense`` when they have a dense form."""

    sdpa: bool = False
    has_dense: bool = True
    scale: float | None = None

    @abstractmethod
    def project(self, x_dst: Tensor, x_src: Tensor) -> tuple[Tensor, Tensor]:
        ...

    @abstractmethod
    def edge(self, q: Tensor, k: Tensor, edge_index: Tensor, edge_type: Tensor | None = None) -> Tensor:
        ...

    def dense(self, q: Tensor, k: Tensor) -> Tensor:
        raise ValueError(f"{type(self).__name__} has no dense path; pass an edge_index instead")


class DotProductScore(Score):
    """Scaled dot product ``q_i . k_j / sqrt(Dh)`` (Vaswani et al., 2017, https://arxiv.org/abs/1706.03762).

    Args:
        dst_dim: feature size of receiving nodes (queries).
        src_dim: feature size of sending nodes (keys).
        heads: number of heads H.
        head_dim: width Dh of each head.
        scale: multiplier of the dot product; default ``Dh ** -0.5``.
        bias: whether the projections have a bias.

    Shapes:
        project: x_dst (..., Nq, dst_dim), x_src (..., Nk, src_dim) -> q (..., Nq, H, Dh), k (..., Nk, H, Dh)
        edge: -> (E, H); dense: q (B, H, Nq, Dh), k (B, H, Nk, Dh) -> (B, H, Nq, Nk)
    """

    sdpa = True

    def __init__(self, dst_dim: int, src_dim: int, heads: int, head_dim: int, scale: float | None = None,
                 bias: bool = True):
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        self.scale = head_dim ** -0.5 if scale is None else float(scale)
        self.q = nn.Linear(dst_dim, heads * head_dim, bias=bias)
        self.k = nn.Linear(src_dim, heads * head_dim, bias=bias)

    def reset_parameters(self) -> None:
        self.q.reset_parameters()
        self.k.reset_parameters()

    def project(self, x_dst, x_src):
        q = self.q(x_dst).unflatten(-1, (self.heads, self.head_dim))
        k = self.k(x_src).unflatten(-1, (self.heads, self.head_dim))
        return q, k

    def edge(self, q, k, edge_index, edge_type=None):
        return (q.index_select(0, edge_index[1]) * k.index_select(0, edge_index[0])).sum(-1) * self.scale

    def dense(self, q, k):
        return torch.matmul(q, k.transpose(-1, -2)) * self.scale


class AdditiveScore(Score):
    """Additive score ``v_h . tanh(W_q x_i + W_k x_j)`` (Bahdanau et al., 2015; Pointer Networks).

    Args:
        dst_dim, src_dim: feature sizes of receivers and senders.
        heads: H; head_dim: hidden width of the tanh layer per head.

    Shapes: as :class:`DotProductScore`; the dense form materialises ``(B, H, Nq, Nk, Dh)``.
    """

    def __init__(self, dst_dim: int, src_dim: int, heads: int, head_dim: int, bias: bool = True):
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        self.q = nn.Linear(dst_dim, heads * head_dim, bias=bias)
        self.k = nn.Linear(src_dim, heads * head_dim, bias=False)
        self.v = nn.Parameter(torch.empty(heads, head_dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.q.reset_parameters()
        self.k.reset_parameters()
        nn.init.uniform_(self.v, -1 / math.sqrt(self.head_dim), 1 / math.sqrt(self.head_dim))

    def project(self, x_dst, x_src):
        q = self.q(x_dst).unflatten(-1, (self.heads, self.head_dim))
        k = self.k(x_src).unflatten(-1, (self.heads, self.head_dim))
        return q, k

    def edge(self, q, k, edge_index, edge_type=None):
        return (torch.tanh(q.index_select(0, edge_index[1]) + k.index_select(0, edge_index[0])) * self.v).sum(-1)

    def dense(self, q, k):
        hidden = torch.tanh(q.unsqueeze(-2) + k.unsqueeze(-3))            # (B, H, Nq, Nk, Dh)
        return (hidden * self.v[None, :, None, None, :]).sum(-1)


class RelationalScore(Score):
    """KGAT's knowledge-aware score ``pi(h, r, t) = (W_r e_t)^T tanh(W_r e_h + e_r)``.

    Wang et al., "KGAT: Knowledge Graph Attention Network for Recommendation", KDD 2019,
    https://arxiv.org/abs/1905.07854, Eq. (4). The receiver ``h`` is the edge's destination and the tail ``t``
    its source (the triple ``(h, r, t)`` sends ``e_t`` to ``h``). With ``heads > 1`` the relation space is
    split into H equal chunks, each giving one head's score (``heads = 1`` is the paper).

    The relation projections ``W_r`` and embeddings ``e_r`` are parameters of this module, so a model that
    also needs them (KGAT's TransR loss) shares them by reading ``score.W_r`` / ``score.e_r``.

    Args:
        dim: node feature size d.
        num_relations: number of edge types R.
        relation_dim: size k of the relation space (default d).
        heads: H, must divide ``relation_dim``.

    Shapes: project is the identity (nodes keep their features); edge: -> (E, H). No dense form.
    """

    has_dense = False
    chunk_size = 1 << 17  # edges scored at once (bounds the (E, k) intermediates to ~35 MB each)

    def __init__(self, dim: int, num_relations: int, relation_dim: int | None = None, heads: int = 1):
        super().__init__()
        relation_dim = dim if relation_dim is None else relation_dim
        if relation_dim % heads:
            raise ValueError(f"relation_dim ({relation_dim}) must be divisible by heads ({heads})")
        self.dim, self.num_relations, self.relation_dim, self.heads = dim, num_relations, relation_dim, heads
        self.W_r = nn.Parameter(torch.empty(num_relations, relation_dim, dim))
        self.e_r = nn.Parameter(torch.empty(num_relations, relation_dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.xavier_uniform_(self.W_r)
        nn.init.xavier_uniform_(self.e_r)

    def project(self, x_dst, x_src):
        return x_dst, x_src

    def edge(self, q, k, edge_index, edge_type=None):
        if edge_type is None:
            raise ValueError("the relational score needs edge_type (one relation id per edge)")
        if edge_type.numel() and (int(edge_type.min()) < 0 or int(edge_type.max()) >= self.num_relations):
            raise ValueError(f"edge_type must lie in [0, {self.num_relations}), "
                             f"got range [{int(edge_type.min())}, {int(edge_type.max())}]")
        # edges in chunks so that the (E, k) intermediates of a multi-million-edge graph stay bounded; within a
        # chunk, one matmul per relation (typed_linear): vectorised over edges, a loop over R types only
        out = []
        for start in range(0, edge_type.numel(), self.chunk_size):
            src, dst = edge_index[:, start:start + self.chunk_size]
            rel = edge_type[start:start + self.chunk_size]
            tail = typed_linear(k.index_select(0, src), rel, self.W_r)                 # (E_c, k)
            head = torch.tanh(typed_linear(q.index_select(0, dst), rel, self.W_r) + self.e_r[rel])
            out.append((tail * head).view(-1, self.heads, self.relation_dim // self.heads).sum(-1))
        return torch.cat(out) if out else q.new_zeros(0, self.heads)
