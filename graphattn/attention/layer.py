"""The one attention layer: message passing with pluggable score, normaliser, message and update.

Letters used in shape comments: B batch, H heads, N/Nq receivers (queries), M/Nk senders (keys),
Dh score width per head, Dv value width per head, E edges.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from ..ops import segment_sum
from .messages import IdentityMessage, Message, ValueMessage
from .normalizers import DstSoftmax, NoNorm, Normalizer, SigmoidGate, SrcSoftmax
from .scores import AdditiveScore, DotProductScore, RelationalScore, Score
from .updates import (Aggregate, BiInteractionUpdate, GCNUpdate, Projection, Residual, SAGEUpdate,
                      Update)

__all__ = ["GraphAttention", "AttentionWeights", "AttentionInfo"]


@dataclass
class AttentionInfo:
    """What an attention hook is told about the weights it receives.

    ``path`` is ``"sparse"`` (weights ``(E, H)``, one row per edge of ``edge_index``) or ``"dense"``
    (weights ``(B, H, Nq, Nk)``). Score hooks get the same, with the dense path's boolean ``mask``
    (broadcastable to the scores, ``True`` = may attend; ``None`` = every pair), so that a hook can leave
    missing edges out of what it measures.
    """

    path: str
    heads: int
    edge_index: Tensor | None = None
    edge_type: Tensor | None = None
    mask: Tensor | None = None


@dataclass
class AttentionWeights:
    """Attention weights returned on request: ``(E, H)`` with the ``edge_index`` they belong to (sparse
    path) or ``(B, H, Nq, Nk)`` with ``edge_index=None`` (dense path)."""

    weights: Tensor
    edge_index: Tensor | None = None


AttentionHook = Callable[["GraphAttention", Tensor, AttentionInfo], "Tensor | None"]
ScoreHook = AttentionHook

_NORMALIZERS = {"dst_softmax": DstSoftmax, "softmax": DstSoftmax, "src_softmax": SrcSoftmax,
                "sigmoid": SigmoidGate, "none": NoNorm}
_UPDATES = {"project": Projection, "residual": Residual, "gcn": GCNUpdate, "graphsage": SAGEUpdate,
            "bi": BiInteractionUpdate}


def _choice(kind: str, value: str, options) -> None:
    if value not in options:
        raise ValueError(f"unknown {kind} {value!r}; expected one of {sorted(options)}")


class GraphAttention(nn.Module):
    r"""Attention-weighted message passing, the layer every graphattn model is built from.

    For a receiver ``i`` with incoming edges ``j -> i``:

    .. math::
        s_{ij} = \mathrm{score}(x_i, x_j, r_{ij}),\quad
        \alpha_{ij} = \mathrm{normalise}(s)_{ij},\quad
        a_i = \sum_j \alpha_{ij}\, \mathrm{message}(x_j, r_{ij}),\quad
        x_i' = \mathrm{update}(x_i, a_i)

    Each choice is a module (see ``scores``, ``normalizers``, ``messages``, ``updates``) or a string:
    score ``"dot" | "additive" | "relational"``; normaliser ``"dst_softmax" | "src_softmax" | "sigmoid" |
    "none"``; message ``"value" | "identity"``; update ``"project" | "residual" | "none" | "gcn" |
    "graphsage" | "bi"``.

    Two paths compute the same function. **Sparse**: ``forward(x, edge_index)`` with per-edge scores and
    segment softmax, for any graph. **Dense**: ``forward(x)`` with ``x`` of shape ``(B, N, D)`` and an
    optional boolean ``mask`` (``True`` = may attend), through ``scaled_dot_product_attention`` when the
    score and normaliser allow it and nobody asked for the weights. A receiver with no incoming edge
    aggregates zeros; the update then decides what it outputs.

    Hooks registered with :meth:`register_attention_hook` see (and may replace) the normalised weights of
    every call on both paths, which is how :mod:`graphattn.interpret` reads, ablates or patches heads
    without touching model code. Hooks registered with :meth:`register_score_hook` do the same with the
    raw scores before the normaliser (adversarial training on attention perturbs them there); either
    kind turns off the fused SDPA shortcut.

    Args:
        in_dim: feature size of receivers (and of senders unless ``src_dim`` is given).
        out_dim: output size of the default projection update (default ``in_dim``).
        heads: number of heads H.
        head_dim: per-head width of scores and values (default ``out_dim // heads``).
        src_dim: feature size of senders for bipartite / cross attention (default ``in_dim``).
        score, normalizer, message, update: the four choices (strings or modules).
        dropout: attention dropout on the normalised weights.
        num_relations, relation_dim: for the relational score.
        negative_slope: LeakyReLU slope of the KGAT aggregators.
        bias: bias in the projections.

    Shapes:
        sparse: x (N, in_dim), x_src (M, src_dim), edge_index (2, E), edge_type (E,) -> (N, out)
        dense: x (B, N, in_dim), x_src (B, M, src_dim), mask (N, M) | (B, N, M) | (B, 1|H, N, M),
        key_padding_mask (B, M) -> (B, N, out)
    """

    def __init__(self, in_dim: int, out_dim: int | None = None, heads: int = 1, head_dim: int | None = None, *,
                 src_dim: int | None = None, score: str | Score = "dot", normalizer: str | Normalizer = "dst_softmax",
                 message: str | Message = "value", update: str | Update = "project", dropout: float = 0.0,
                 num_relations: int | None = None, relation_dim: int | None = None,
                 negative_slope: float = 0.2, bias: bool = True):
        super().__init__()
        out_dim = in_dim if out_dim is None else out_dim
        src_dim = in_dim if src_dim is None else src_dim
        if head_dim is None:
            if out_dim % heads:
                raise ValueError(f"out_dim ({out_dim}) must be divisible by heads ({heads}) unless head_dim is given")
            head_dim = out_dim // heads
        self.in_dim, self.out_dim, self.heads, self.head_dim = in_dim, out_dim, heads, head_dim

        if isinstance(score, str):
            _choice("score", score, ("dot", "additive", "relational"))
            if score == "dot":
                score = DotProductScore(in_dim, src_dim, heads, head_dim, bias=bias)
            elif score == "additive":
                score = AdditiveScore(in_dim, src_dim, heads, head_dim, bias=bias)
            else:
                if num_relations is None:
                    raise ValueError("score='relational' needs num_relations")
                score = RelationalScore(in_dim, num_relations, relation_dim, heads)
        if isinstance(normalizer, str):
            _choice("normalizer", normalizer, _NORMALIZERS)
            normalizer = _NORMALIZERS[normalizer]()
        if isinstance(message, str):
            _choice("message", message, ("value", "identity"))
            message = (ValueMessage(src_dim, heads, head_dim, bias=bias) if message == "value"
                       else IdentityMessage(src_dim, heads))
        agg_dim = message.heads * message.value_dim
        if isinstance(update, str):
            _choice("update", update, list(_UPDATES) + ["none"])
            if update == "none":
                update = Aggregate()
            elif update in ("project", "residual"):
                update = _UPDATES[update](agg_dim, out_dim, bias=bias)
            else:
                update = _UPDATES[update](agg_dim, out_dim, negative_slope=negative_slope)
        self.score, self.normalizer, self.message, self.update = score, normalizer, message, update
        self.dropout = float(dropout)
        self._attention_hooks: OrderedDict[int, AttentionHook] = OrderedDict()
        self._score_hooks: OrderedDict[int, ScoreHook] = OrderedDict()

    def reset_parameters(self) -> None:
        for module in (self.score, self.message, self.update):
            for m in module.modules():
                if m is not self and hasattr(m, "reset_parameters"):
                    m.reset_parameters()

    # ------------------------------------------------------------------------------------------- hooks

    def register_attention_hook(self, hook: AttentionHook) -> RemovableHandle:
        """Call ``hook(layer, weights, info)`` on the normalised weights of every forward call.

        A hook returning a tensor replaces the weights (same shape); returning ``None`` leaves them.
        Returns a handle whose ``remove()`` unregisters the hook.
        """
        handle = RemovableHandle(self._attention_hooks)
        self._attention_hooks[handle.id] = hook
        return handle

    def register_score_hook(self, hook: ScoreHook) -> RemovableHandle:
        """Call ``hook(layer, scores, info)`` on the raw scores of every forward call, before the normaliser.

        Scores are ``(E, H)`` (sparse) or ``(B, H, Nq, Nk)`` (dense, before the mask is applied, which the
        normaliser does afterwards, so a change to a missing edge has no effect). A hook returning a tensor
        replaces the scores (same shape; gradients flow through it); returning ``None`` leaves them.
        Returns a handle whose ``remove()`` unregisters the hook.
        """
        handle = RemovableHandle(self._score_hooks)
        self._score_hooks[handle.id] = hook
        return handle

    @property
    def has_hooks(self) -> bool:
        """Whether any attention or score hook is registered: fast paths that never form the scores or the
        weights (fused SDPA, gathered or routed kernels) must not be taken then."""
        return bool(self._attention_hooks or self._score_hooks)

    def _run_hooks(self, weights: Tensor, info: AttentionInfo, hooks: OrderedDict | None = None,
                   kind: str = "attention") -> Tensor:
        for hook in list((self._attention_hooks if hooks is None else hooks).values()):
            out = hook(self, weights, info)
            if out is not None:
                if out.shape != weights.shape:
                    raise ValueError(f"{kind} hook returned shape {tuple(out.shape)}, expected {tuple(weights.shape)}")
                weights = out
        return weights

    def _drop(self, weights: Tensor) -> Tensor:
        return F.dropout(weights, self.dropout, self.training) if self.dropout > 0 else weights

    # ------------------------------------------------------------------------------------------- sparse

    def attention(self, x: Tensor, edge_index: Tensor, *, x_src: Tensor | None = None,
                  edge_type: Tensor | None = None) -> Tensor:
        """Normalised per-edge weights ``(E, H)`` (score, normaliser, hooks and dropout), without messages.

        Models that keep attention fixed for a while (KGAT refreshes it once per epoch) call this and then
        :meth:`propagate`.
        """
        x_src = x if x_src is None else x_src
        self._check_edges(edge_index, x.shape[0], x_src.shape[0], edge_type)
        q, k = self.score.project(x, x_src)                                   # (N, H, Dh), (M, H, Dh)
        scores = self.score.edge(q, k, edge_index, edge_type)                  # (E, H)
        if self._score_hooks:
            scores = self._run_hooks(scores, AttentionInfo("sparse", scores.shape[-1], edge_index, edge_type),
                                     self._score_hooks, "score")
        weights = self.normalizer.edge(scores, edge_index, x.shape[0], x_src.shape[0])
        if self._attention_hooks:
            weights = self._run_hooks(weights, AttentionInfo("sparse", weights.shape[-1], edge_index, edge_type))
        return self._drop(weights)

    def propagate(self, weights: Tensor, x_src: Tensor, edge_index: Tensor, num_dst: int,
                  edge_type: Tensor | None = None) -> Tensor:
        """Weighted sum of messages at each receiver: ``(E, H)`` weights -> ``(num_dst, H * Dv)``."""
        v = self.message.project(x_src)                                       # (M, H, Dv)
        messages = self.message.edge(v, edge_index, edge_type)                 # (E, H, Dv)
        agg = segment_sum(weights.unsqueeze(-1) * messages, edge_index[1], num_dst)
        return agg.flatten(-2)

    def _check_edges(self, edge_index: Tensor, num_dst: int, num_src: int, edge_type: Tensor | None) -> None:
        if edge_index.dim() != 2 or edge_index.shape[0] != 2:
            raise ValueError(f"edge_index must have shape (2, E), got {tuple(edge_index.shape)}")
        if edge_index.numel():
            if int(edge_index[0].max()) >= num_src or int(edge_index[1].max()) >= num_dst or int(edge_index.min()) < 0:
                raise ValueError(f"edge_index refers to nodes outside [0, {num_src}) senders / [0, {num_dst}) "
                                 f"receivers (got max src {int(edge_index[0].max())}, max dst {int(edge_index[1].max())})")
        if edge_type is not None and edge_type.shape != (edge_index.shape[1],):
            raise ValueError(f"edge_type must have shape ({edge_index.shape[1]},), got {tuple(edge_type.shape)}")

    # ------------------------------------------------------------------------------------------- dense

    def _dense(self, x: Tensor, x_src: Tensor, mask: Tensor | None, need_weights: bool) -> tuple[Tensor, Tensor | None]:
        if not self.score.has_dense or self.message.per_edge:
            raise ValueError(f"{type(self.score).__name__} / {type(self.message).__name__} has no dense path; "
                             "pass an edge_index")
        q, k = self.score.project(x, x_src)
        q, k = q.transpose(1, 2), k.transpose(1, 2)                            # (B, H, N, Dh), (B, H, M, Dh)
        v = self.message.project(x_src).transpose(1, 2)                        # (B, H, M, Dv)
        use_sdpa = self.score.sdpa and self.normalizer.sdpa and not need_weights and not self.has_hooks
        if use_sdpa:
            empty = None
            if mask is not None:
                # SDPA returns NaN for a query with no key; let such rows attend everywhere, then zero them
                empty = ~mask.any(-1, keepdim=True)                            # (B|1, H|1, N, 1)
                mask = mask | empty
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.score.scale,
                                                 dropout_p=self.dropout if self.training else 0.0)
            if empty is not None and bool(empty.any()):
                out = out.masked_fill(empty, 0.0)
            return out, None
        scores = self.score.dense(q, k)                                        # (B, H, N, M)
        if self._score_hooks:
            scores = self._run_hooks(scores, AttentionInfo("dense", self.heads, mask=mask), self._score_hooks, "score")
        weights = self.normalizer.dense(scores, mask)                          # (B, H, N, M)
        if self._attention_hooks:
            weights = self._run_hooks(weights, AttentionInfo("dense", self.heads))
        weights = self._drop(weights)
        return torch.matmul(weights, v), weights

    @staticmethod
    def _dense_mask(mask: Tensor | None, key_padding_mask: Tensor | None, batch: int) -> Tensor | None:
        if mask is not None:
            if mask.dtype != torch.bool:
                raise TypeError(f"mask must be boolean (True = may attend), got {mask.dtype}")
            if mask.dim() == 2:
                mask = mask[None, None]
            elif mask.dim() == 3:
                mask = mask[:, None]
            elif mask.dim() != 4:
                raise ValueError(f"mask must have 2, 3 or 4 dimensions, got shape {tuple(mask.shape)}")
        if key_padding_mask is not None:
            if key_padding_mask.dim() != 2 or key_padding_mask.shape[0] != batch:
                raise ValueError(f"key_padding_mask must be (B, M) with B={batch}, got {tuple(key_padding_mask.shape)}")
            kp = key_padding_mask.bool()[:, None, None, :]
            mask = kp if mask is None else mask & kp
        return mask

    # ------------------------------------------------------------------------------------------- forward

    def forward(self, x: Tensor, edge_index: Tensor | None = None, *, x_src: Tensor | None = None,
                edge_type: Tensor | None = None, mask: Tensor | None = None,
                key_padding_mask: Tensor | None = None, return_attention: bool = False):
        if edge_index is not None:
            if mask is not None or key_padding_mask is not None:
                raise ValueError("pass either edge_index (sparse path) or a mask (dense path), not both")
            src = x if x_src is None else x_src
            weights = self.attention(x, edge_index, x_src=x_src, edge_type=edge_type)
            out = self.update(x, self.propagate(weights, src, edge_index, x.shape[0], edge_type))
            return (out, AttentionWeights(weights, edge_index)) if return_attention else out
        if x.dim() != 3:
            raise ValueError(f"the dense path takes x of shape (B, N, D), got {tuple(x.shape)}; "
                             "pass edge_index for node features of shape (N, D)")
        src = x if x_src is None else x_src
        mask = self._dense_mask(mask, key_padding_mask, x.shape[0])
        agg, weights = self._dense(x, src, mask, return_attention)
        out = self.update(x, agg.transpose(1, 2).flatten(-2))                  # (B, N, H * Dv)
        return (out, AttentionWeights(weights)) if return_attention else out
