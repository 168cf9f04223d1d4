"""Minimal induction-head model with three scalar parameters (Reddy, ICLR 2024, arXiv 2312.03002, Sec. 3).

A message-passing graph over the ``2N + 1`` tokens of an ``icl-bursty`` sequence whose only parameters are
three scalar logits. Let ``c_t`` be the content part of token ``t`` (the one-hot positions are dropped: the
model knows the layout x_1, l_1, ..., x_N, l_N, x_q), ``sigma`` the logistic function.

1. **Layer 1** (:class:`GraphAttention`, score :class:`PreviousTokenScore`): every token ``i`` attends over
   the two edges ``i -> i`` (logit 0) and ``i - 1 -> i`` (logit ``beta_1``), messages are the senders'
   contents, and the residual stream is ``h_i = c_i + (1 - w_1) c_i + w_1 c_{i-1}`` with
   ``w_1 = sigma(beta_1)``. At a label token ``h = (2 - w_1) l_j + w_1 x_j``: the previous item is copied in.
2. **Layer 2** (:class:`GraphAttention`, score :class:`OverlapScore`): the query attends over the ``N``
   label tokens with logits ``alpha * (c_q . h_j)`` = ``alpha`` times the query-to-item overlap after copying,
   ``w_1 (x_q . x_j)``, plus ``alpha (2 - w_1)(x_q . l_j)`` (~ 0 for random vectors); the message is the
   label token's own content ``l_j`` (an idealised value matrix reading the label), so the query receives
   ``o = sum_j a_j l_j``.
3. **Classifier**: logits ``z_k = xi * (l_k . o)`` over the ``L`` label vectors: ``xi`` scales the overlap of
   the read-out with each label (on-diagonal ~ 1, off-diagonal ~ 0 for random labels, so ``xi`` is the
   on-minus-off-diagonal alignment).

Loss: cross-entropy on the query's label. With orthonormal items and labels, B = 1 and distinct context
labels, the loss is exactly the **phenomenological loss** with three nested softmaxes (:func:`phenomenological_loss`)::

    x = sigma(beta_1),  y = e^{alpha x} / (e^{alpha x} + N - 1),
    L(beta_1, alpha, xi) = -xi y + log(e^{xi y} + (N - 1) e^{xi (1 - y) / (N - 1)} + (L - N)).

At the origin ``y = 1/N`` and the softmax is uniform over the ``L`` labels, so
``dL/dxi = 1/L - 1/N`` while ``dL/dalpha`` and ``dL/dbeta_1`` are proportional to ``xi`` and vanish: for
``L > N`` the classifier overlap grows first (learning to pick *a* context label, IC accuracy 1/L -> 1/N,
the slow phase), which then gives ``alpha`` and, through ``alpha``, ``beta_1`` a gradient (the intrinsic
curriculum; the nested logits make the final rise abrupt). For ``L = N`` every label is in every context,
the origin is a critical point and the loss starts flat.

**This is a reconstruction**, not the paper's equations: the paper text (Sec. 3, Eqs. 7-10) could not be
read here. It follows the spec's description (three scalar edge logits: beta_1 on the previous-token edge,
alpha scaling the query-to-item overlap after copying, the classifier overlap xi; three nested softmaxes;
flat start at L = N) and the author's OpenReview reply ("the origin is not a critical point ... except when
L = N ... the network gradually aligns the regression vectors with their corresponding labels (increasing
xi)"). Choices that are ours: the two-edge layer-1 graph, the query attending to label tokens only (not to
items), the idealised layer-2 value (the label content), the init (all three at ``icl_minimal_init``).

Option ``icl_minimal_inweights`` adds an in-weights read-out ``W x_q`` (``W``: L x D, zero init) to the
logits, so that in-weights learning can compete with the induction head (the data-dependence study);
with it the model has ``3 + L D`` parameters.

Args (config keys): icl_minimal_init, icl_minimal_inweights.

Shapes: tokens (B, 2N+1, P+D) -> logits (B, L).
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from graphattn.attention import GraphAttention
from graphattn.attention.messages import Message
from graphattn.attention.scores import Score
from graphattn.interpret import capture_attention
from graphattn.registry import register_model

from .base import ICLModel

__all__ = ["InductionMinimal", "PreviousTokenScore", "OverlapScore", "phenomenological_loss"]


class PreviousTokenScore(Score):
    """Scalar edge logit ``beta`` on the previous-token edge ``i - 1 -> i``, 0 on every other edge.

    Shapes: dense q (B, 1, N, .), k (B, 1, M, .) -> (B, 1, N, M)."""

    def __init__(self) -> None:
        super().__init__()
        self.beta = nn.Parameter(torch.zeros(()))

    def project(self, x_dst, x_src):
        return x_dst.unsqueeze(-2), x_src.unsqueeze(-2)

    def edge(self, q, k, edge_index, edge_type=None):
        prev = (edge_index[0] == edge_index[1] - 1).to(self.beta.dtype)
        return (prev * self.beta)[:, None]

    def dense(self, q, k):
        n, m = q.shape[-2], k.shape[-2]
        prev = torch.ones(n, m, dtype=torch.bool, device=q.device).tril(-1).triu(-1)   # j = i - 1
        return (prev.to(q.dtype) * self.beta).expand(q.shape[0], 1, n, m)


class OverlapScore(Score):
    """``alpha * (q_i . k_j)`` on the receivers' and senders' first ``dim`` features (no projections).

    Shapes: dense -> (B, 1, N, M)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.alpha = nn.Parameter(torch.zeros(()))

    def project(self, x_dst, x_src):
        return x_dst[..., :self.dim].unsqueeze(-2), x_src[..., :self.dim].unsqueeze(-2)

    def edge(self, q, k, edge_index, edge_type=None):
        return self.alpha * (q.index_select(0, edge_index[1]) * k.index_select(0, edge_index[0])).sum(-1)

    def dense(self, q, k):
        return self.alpha * torch.matmul(q, k.transpose(-1, -2))


class SliceMessage(Message):
    """The sender's features ``[start:]`` as the message (one head, no parameters)."""

    def __init__(self, start: int, dim: int) -> None:
        super().__init__()
        self.start, self.value_dim = start, dim

    def project(self, x_src):
        return x_src[..., self.start:self.start + self.value_dim].unsqueeze(-2)


def phenomenological_loss(beta1: Tensor, alpha: Tensor, xi: Tensor, num_pairs: int, num_labels: int) -> Tensor:
    """The three-nested-logit loss (see the module docstring): the model's loss for orthonormal items and
    labels, B = 1, distinct context labels. Broadcasts over its tensor arguments."""
    N, L = num_pairs, num_labels
    x = torch.sigmoid(beta1)
    y = torch.exp(alpha * x) / (torch.exp(alpha * x) + N - 1)
    terms = [xi * y, math.log(N - 1) + xi * (1 - y) / (N - 1)] if N > 1 else [xi * y]
    if L > N:
        terms.append(torch.full_like(xi * y, math.log(L - N)))
    return -xi * y + torch.logsumexp(torch.stack(torch.broadcast_tensors(*terms)), 0)


@register_model("InductionMinimal", task="icl")
class InductionMinimal(ICLModel):
    data_kind = "classification"

    def __init__(self, config: Mapping[str, Any], data: Any) -> None:
        super().__init__(config, data)
        cfg = data.config
        self.positions, self.dim, self.seq_len = cfg.positions, cfg.dim, cfg.seq_len
        self.num_pairs, self.num_labels = cfg.num_pairs, cfg.num_labels
        self.register_buffer("label_vectors", data.label_vectors.clone(), persistent=False)   # (L, D)
        self.layer1 = GraphAttention(self.dim, heads=1, head_dim=1, score=PreviousTokenScore(),
                                     message="identity", update="none")
        self.layer2 = GraphAttention(self.dim, heads=1, head_dim=1, src_dim=2 * self.dim, score=OverlapScore(self.dim),
                                     message=SliceMessage(self.dim, self.dim), update="none")
        self.xi = nn.Parameter(torch.zeros(()))
        self.inweights = (nn.Linear(self.dim, self.num_labels, bias=False)
                          if bool(config["icl_minimal_inweights"]) else None)
        T = self.seq_len
        edges = torch.eye(T, dtype=torch.bool) | torch.ones(T, T, dtype=torch.bool).tril(-1).triu(-1)
        self.register_buffer("edges1", edges, persistent=False)             # i -> i and i - 1 -> i
        init = float(config["icl_minimal_init"])
        with torch.no_grad():
            for p in (self.layer1.score.beta, self.layer2.score.alpha, self.xi):
                p.fill_(init)
            if self.inweights is not None:
                self.inweights.weight.zero_()

    @property
    def beta1(self) -> Tensor:
        return self.layer1.score.beta

    @property
    def alpha(self) -> Tensor:
        return self.layer2.score.alpha

    def forward(self, tokens: Tensor) -> Tensor:
        if tokens.dim() != 3 or tokens.shape[1:] != (self.seq_len, self.positions + self.dim):
            raise ValueError(f"tokens must be (B, {self.seq_len}, {self.positions + self.dim}), got {tuple(tokens.shape)}")
        c = tokens[..., self.positions:]                                    # (B, T, D) contents
        h = c + self.layer1(c, mask=self.edges1)                            # (B, T, D) residual stream
        labels = slice(1, 2 * self.num_pairs, 2)
        src = torch.cat([h[:, labels], c[:, labels]], -1)                   # keys: h_j; messages: l_j
        o = self.layer2(c[:, -1:], x_src=src)[:, 0]                         # (B, D) = sum_j a_j l_j
        logits = self.xi * o @ self.label_vectors.T                         # (B, L)
        if self.inweights is not None:
            logits = logits + self.inweights(c[:, -1])
        return logits

    def loss(self, batch):
        logits = self(batch["tokens"])
        loss = F.cross_entropy(logits, batch["target"])
        return loss, {"accuracy": float((logits.argmax(-1) == batch["target"]).float().mean())}

    @torch.no_grad()
    def evaluate(self, batch):
        """The metrics of :class:`InductionNet` (accuracy, loss, context-label share, previous-token and
        induction scores read with ``capture_attention``)."""
        with capture_attention(self) as store:
            logits = self(batch["tokens"])
        pred = logits.argmax(-1)
        N = self.num_pairs
        in_context = (pred[:, None] == batch["context_labels"]).any(-1)
        w1 = store["layer1"][0][:, 0]                                        # (B, T, T)
        lab = torch.arange(1, 2 * N, 2)
        match = (batch["classes"][:, :N] == batch["classes"][:, N:]).to(logits.dtype)
        a2 = store["layer2"][0][:, 0, 0]                                     # (B, N) weights on the label tokens
        return {"accuracy": float((pred == batch["target"]).float().mean()),
                "loss": float(F.cross_entropy(logits, batch["target"])),
                "context_label": float(in_context.float().mean()),
                "prev_token": float(w1[:, lab, lab - 1].mean()),
                "induction": float((a2 * match).sum(-1).mean())}

    def diagnostics(self):
        out = {"beta1": float(self.beta1), "alpha": float(self.alpha), "xi": float(self.xi)}
        if self.inweights is not None:
            out["inweights_norm"] = float(self.inweights.weight.norm())
        return out
