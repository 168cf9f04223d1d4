"""In-context linear regression data (He, Pan, Chen, Yang, "In-Context Linear Regression Demystified",
https://arxiv.org/abs/2503.12734; the authors' notebook ``icl_linear.ipynb``).

A prompt holds ``L`` pairs ``z_i = (x_i, y_i)`` and a query ``z_q = (x_q, 0)``:
``x_i, x_q ~ N(0, I_d)``, a task ``beta ~ N(0, I_d / d)`` per prompt, ``y_i = beta . x_i + e_i`` with
``e_i ~ N(0, sigma^2)``, and the noise-free target ``y_q = beta . x_q``. A fresh batch every step.

Shapes: ``context`` (B, L, d + 1), ``query`` (B, 1, d + 1), ``target`` (B,), ``beta`` (B, d).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from graphattn.registry import register_dataset

__all__ = ["RegressionData", "sample_regression", "load_icl_regression"]


def sample_regression(batch: int, length: int, dim: int, noise_var: float,
                      generator: torch.Generator | None = None) -> dict[str, Tensor]:
    """One batch of prompts (see the module docstring)."""
    if batch < 1 or length < 1 or dim < 1:
        raise ValueError(f"batch, length and dim must be >= 1, got {batch}, {length}, {dim}")
    if noise_var < 0:
        raise ValueError(f"noise variance must be >= 0, got {noise_var}")
    x = torch.randn(batch, length, dim, generator=generator)
    beta = torch.randn(batch, dim, generator=generator) / dim ** 0.5
    y = torch.einsum("bld,bd->bl", x, beta) + noise_var ** 0.5 * torch.randn(batch, length, generator=generator)
    xq = torch.randn(batch, dim, generator=generator)
    context = torch.cat([x, y.unsqueeze(-1)], dim=-1)                          # (B, L, d + 1)
    query = torch.cat([xq, xq.new_zeros(batch, 1)], dim=-1).unsqueeze(1)       # (B, 1, d + 1)
    return {"context": context, "query": query, "target": (xq * beta).sum(-1), "beta": beta}


@dataclass
class RegressionData:
    """The generator's settings and fixed evaluation prompts (``eval_sets[split][name] -> batch``)."""

    dim: int
    length: int
    noise_var: float
    eval_sets: dict[str, dict[str, dict[str, Tensor]]] = field(default_factory=dict)

    kind = "regression"

    def sample(self, batch: int, generator: torch.Generator, length: int | None = None) -> dict[str, Tensor]:
        return sample_regression(batch, self.length if length is None else length, self.dim, self.noise_var, generator)

    def __str__(self) -> str:
        return f"icl-regression: d={self.dim}, L={self.length}, sigma^2={self.noise_var}"


def load_icl_regression(config: Mapping[str, Any]) -> RegressionData:
    dim, length, noise = int(config["icl_dim"]), int(config["icl_context"]), float(config["icl_noise_var"])
    data = RegressionData(dim, length, noise)
    g = torch.Generator().manual_seed(int(config["data_seed"]))
    for split, size in (("valid", int(config["icl_valid_size"])), ("test", int(config["icl_test_size"]))):
        data.eval_sets[split] = {"": data.sample(size, g)}
    return data


register_dataset("icl-regression", task="icl", loader=load_icl_regression,
                 description="in-context linear regression prompts (He et al. 2025): d=5, L=40, sigma^2=0.1")
