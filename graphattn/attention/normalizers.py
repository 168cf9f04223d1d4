"""Normalisers: which edges compete for attention mass (second of the four choices on an edge).

``edge(scores, edge_index, num_dst, num_src)`` normalises per-edge scores ``(E, H)`` on the sparse path;
``dense(scores, mask)`` normalises ``(B, H, Nq, Nk)`` scores where ``mask`` (broadcastable, ``True`` = edge
exists) hides missing edges. Both paths give a missing edge weight 0, and a node with nothing to normalise
over gets all-zero weights, never NaN.
"""
from __future__ import annotations

from abc import ABCMeta, abstractmethod

import torch
from torch import Tensor, nn

from ..ops import edge_softmax

__all__ = ["Normalizer", "DstSoftmax", "SrcSoftmax", "SigmoidGate", "NoNorm", "masked_softmax"]


def masked_softmax(scores: Tensor, mask: Tensor | None, dim: int) -> Tensor:
    """Softmax along ``dim`` over entries where ``mask`` is True; all-masked slices give zeros."""
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    with torch.no_grad():
        shift = scores.amax(dim, keepdim=True)
        shift = torch.where(torch.isfinite(shift), shift, torch.zeros_like(shift))
    z = (scores - shift).exp()
    return z / z.sum(dim, keepdim=True).clamp_min(torch.finfo(z.dtype).tiny)


class Normalizer(nn.Module, metaclass=ABCMeta):
    sdpa: bool = False

    @abstractmethod
    def edge(self, scores: Tensor, edge_index: Tensor, num_dst: int, num_src: int) -> Tensor:
        ...

    @abstractmethod
    def dense(self, scores: Tensor, mask: Tensor | None) -> Tensor:
        ...


class DstSoftmax(Normalizer):
    """Softmax over each receiver's incoming edges (usual attention; KGAT pools all relations of a head)."""

    sdpa = True

    def edge(self, scores, edge_index, num_dst, num_src):
        return edge_softmax(scores, edge_index, num_dst, by="dst")

    def dense(self, scores, mask):
        return masked_softmax(scores, mask, dim=-1)


class SrcSoftmax(Normalizer):
    """Softmax over each sender's outgoing edges (reversed attention, DependencyViT): a child distributes
    its message over its parents, and a receiver's total incoming weight is left unnormalised."""

    def edge(self, scores, edge_index, num_dst, num_src):
        return edge_softmax(scores, edge_index, num_src, by="src")

    def dense(self, scores, mask):
        return masked_softmax(scores, mask, dim=-2)


class SigmoidGate(Normalizer):
    """No competition: each edge is gated independently by ``sigmoid(score)``."""

    def edge(self, scores, edge_index, num_dst, num_src):
        return torch.sigmoid(scores)

    def dense(self, scores, mask):
        w = torch.sigmoid(scores)
        return w if mask is None else w.masked_fill(~mask, 0.0)


class NoNorm(Normalizer):
    """Raw scores used as weights (e.g. ISTA-Net's tanh affinities); missing edges weigh 0."""

    def edge(self, scores, edge_index, num_dst, num_src):
        return scores

    def dense(self, scores, mask):
        return scores if mask is None else scores.masked_fill(~mask, 0.0)
