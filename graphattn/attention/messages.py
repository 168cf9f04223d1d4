"""Messages: what flows along an edge (third of the four choices on an edge).

``project(x_src)`` maps sender features to per-head values ``(..., N, H, Dv)``; ``edge(v, edge_index,
edge_type)`` gives the ``(E, H, Dv)`` message of each edge (by default the sender's value). A message with
``per_edge = True`` depends on the edge (its type or features) and has no dense form.
"""
from __future__ import annotations

from abc import ABCMeta, abstractmethod

from torch import Tensor, nn

__all__ = ["Message", "ValueMessage", "IdentityMessage"]


class Message(nn.Module, metaclass=ABCMeta):
    per_edge: bool = False
    heads: int = 1
    value_dim: int = 0

    @abstractmethod
    def project(self, x_src: Tensor) -> Tensor:
        ...

    def edge(self, v: Tensor, edge_index: Tensor, edge_type: Tensor | None = None) -> Tensor:
        return v.index_select(0, edge_index[0])   # index_select: its backward is a fast index_add


class ValueMessage(Message):
    """A linear value projection per head, ``W_v x_j``.

    Shapes: x_src (..., N, src_dim) -> (..., N, H, Dv).
    """

    def __init__(self, src_dim: int, heads: int, value_dim: int, bias: bool = True):
        super().__init__()
        self.heads, self.value_dim = heads, value_dim
        self.v = nn.Linear(src_dim, heads * value_dim, bias=bias)

    def reset_parameters(self) -> None:
        self.v.reset_parameters()

    def project(self, x_src):
        return self.v(x_src).unflatten(-1, (self.heads, self.value_dim))


class IdentityMessage(Message):
    """The sender's raw features (KGAT sends ``e_t`` itself); with H heads each head carries the whole vector.

    Shapes: x_src (..., N, D) -> (..., N, H, D).
    """

    def __init__(self, dim: int, heads: int = 1):
        super().__init__()
        self.heads, self.value_dim = heads, dim

    def project(self, x_src):
        return x_src.unsqueeze(-2).expand(*x_src.shape[:-1], self.heads, x_src.shape[-1])
