"""Updates: how a node combines its old state with the aggregated messages (fourth choice on an edge).

Every update is called as ``update(x_dst, agg)`` with ``agg`` of shape ``(..., N, H * Dv)``.
The KGAT aggregators follow Wang et al., KDD 2019, Eqs. (6)-(8), with the official code's bias terms and
LeakyReLU slope 0.2 (TensorFlow's default).
"""
from __future__ import annotations

from abc import ABCMeta, abstractmethod

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["Update", "Projection", "Residual", "GCNUpdate", "SAGEUpdate", "BiInteractionUpdate", "Aggregate"]


class Update(nn.Module, metaclass=ABCMeta):
    @abstractmethod
    def forward(self, x_dst: Tensor, agg: Tensor) -> Tensor:
        ...


class Aggregate(Update):
    """Return the aggregate unchanged (heads concatenated)."""

    def forward(self, x_dst, agg):
        return agg


class Projection(Update):
    """Output projection of the concatenated heads, ``W_o agg`` (a transformer's attention output)."""

    def __init__(self, in_dim: int, out_dim: int, bias: bool = True):
        super().__init__()
        self.proj = nn.Linear(in_dim, out_dim, bias=bias)

    def forward(self, x_dst, agg):
        return self.proj(agg)


class Residual(Update):
    """``x + W_o agg``: the residual branch of a transformer block."""

    def __init__(self, in_dim: int, out_dim: int, bias: bool = True):
        super().__init__()
        self.proj = nn.Linear(in_dim, out_dim, bias=bias)

    def forward(self, x_dst, agg):
        return x_dst + self.proj(agg)


class GCNUpdate(Update):
    """KGAT's GCN aggregator ``LeakyReLU(W (e_h + e_N))``."""

    def __init__(self, in_dim: int, out_dim: int, negative_slope: float = 0.2):
        super().__init__()
        self.linear, self.negative_slope = nn.Linear(in_dim, out_dim), negative_slope

    def forward(self, x_dst, agg):
        return F.leaky_relu(self.linear(x_dst + agg), self.negative_slope)


class SAGEUpdate(Update):
    """KGAT's GraphSage aggregator ``LeakyReLU(W [e_h || e_N])``."""

    def __init__(self, in_dim: int, out_dim: int, negative_slope: float = 0.2):
        super().__init__()
        self.linear, self.negative_slope = nn.Linear(2 * in_dim, out_dim), negative_slope

    def forward(self, x_dst, agg):
        return F.leaky_relu(self.linear(torch.cat([x_dst, agg], dim=-1)), self.negative_slope)


class BiInteractionUpdate(Update):
    """KGAT's Bi-Interaction aggregator ``LeakyReLU(W1 (e_h + e_N)) + LeakyReLU(W2 (e_h * e_N))``."""

    def __init__(self, in_dim: int, out_dim: int, negative_slope: float = 0.2):
        super().__init__()
        self.sum_linear, self.prod_linear = nn.Linear(in_dim, out_dim), nn.Linear(in_dim, out_dim)
        self.negative_slope = negative_slope

    def forward(self, x_dst, agg):
        return (F.leaky_relu(self.sum_linear(x_dst + agg), self.negative_slope)
                + F.leaky_relu(self.prod_linear(x_dst * agg), self.negative_slope))
