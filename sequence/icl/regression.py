"""One layer of multi-head softmax attention for in-context linear regression.

He, Pan, Chen, Yang, "In-Context Linear Regression Demystified: Training Dynamics and Mechanistic
Interpretability of Multi-Head Softmax Attention", 2025, https://arxiv.org/abs/2503.12734.

.. math::
    f(Z, z_q) = \\sum_h O_h V_h Z\\, \\mathrm{softmax}\\big(Z^\\top K_h^\\top Q_h z_q / \\sqrt{d + 1}\\big)

The query token ``z_q = (x_q, 0)`` attends over the ``L`` context tokens ``z_i = (x_i, y_i)`` (not itself):
a star graph with ``H`` parallel edge types. Built from the core's :class:`GraphAttention` (dense path,
cross attention from the query to the context): a :class:`DotProductScore` with full-width heads
(head dim ``d + 1``, no biases, scale ``1 / sqrt(d + 1)``), a :class:`ValueMessage` (``V_h``) and a
bias-free :class:`Projection` to one output whose per-head slices are the rows ``O_h``.

Read-outs (weight space): ``W_KQ[h] = Q_h^T K_h`` ((d+1) x (d+1)) and ``W_OV[h] = O_h V_h`` (1 x (d+1));
``omega_h`` = scale x the mean of the first ``d`` diagonal entries of ``W_KQ[h]`` (so the logit of context
token ``i`` is ~ ``omega_h x_i . x_q``, the convention of the paper's estimators) and ``mu_h`` = the last entry
of ``W_OV[h]``.

Deviation: torch's default init of one ``Linear(H (d+1), 1)`` output would draw ``O`` with fan-in
``H (d+1)``; ``reset_parameters`` redraws it with the per-head fan-in ``d + 1`` of the notebook's separate
``O_h`` rows, so every head starts at the scale of the paper's model.

Args (config keys): icl_heads (H), icl_init ("random" = torch's default Linear init).

Shapes: context (B, L, d+1), query (B, 1, d+1) -> prediction (B,).
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from graphattn.attention import DotProductScore, GraphAttention, Projection, ValueMessage
from graphattn.registry import register_model

from .base import ICLModel

__all__ = ["ICLRegression"]

INITS = ("random", "small_identity", "paired")


@register_model("ICLRegression", task="icl")
class ICLRegression(ICLModel):
    data_kind = "regression"

    def __init__(self, config: Mapping[str, Any], data: Any) -> None:
        super().__init__(config, data)
        self.dim = int(data.dim)
        self.heads = int(config["icl_heads"])
        if self.heads < 1:
            raise ValueError(f"icl_heads must be >= 1, got {self.heads}")
        self.init = str(config["icl_init"])
        if self.init not in INITS:
            raise ValueError(f"icl_init: expected one of {INITS}, got {self.init!r}")
        self.noise_var = float(data.noise_var)
        width = self.dim + 1
        score = DotProductScore(width, width, self.heads, width, scale=1 / math.sqrt(width), bias=False)
        self.attn = GraphAttention(width, out_dim=1, heads=self.heads, head_dim=width, score=score,
                                   message=ValueMessage(width, self.heads, width, bias=False),
                                   update=Projection(self.heads * width, 1, bias=False))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.attn.reset_parameters()
        width = self.dim + 1
        bound = 1 / math.sqrt(width)
        with torch.no_grad():
            nn.init.uniform_(self.attn.update.proj.weight, -bound, bound)
            if self.init in ("small_identity", "paired"):
                # the notebook's alternatives: every head starts near (identity KQ, last-entry OV);
                # "paired" gives heads alternating signs of mu
                eye = torch.eye(width).repeat(self.heads, 1) * 0.1
                self.attn.score.q.weight.copy_(eye)
                self.attn.score.k.weight.copy_(eye)
                self.attn.message.v.weight.copy_(eye)
                o = torch.zeros(1, self.heads, width)
                o[0, :, -1] = 0.1 if self.init == "small_identity" else 0.1 * (-1.0) ** torch.arange(self.heads)
                self.attn.update.proj.weight.copy_(o.flatten(1))

    def forward(self, context: Tensor, query: Tensor, return_attention: bool = False):
        out = self.attn(query, x_src=context, return_attention=return_attention)
        if return_attention:
            return out[0][:, 0, 0], out[1].weights                               # (B,), (B, H, 1, L)
        return out[:, 0, 0]                                                     # (B,)

    def loss(self, batch):
        loss = F.mse_loss(self(batch["context"], batch["query"]), batch["target"])
        return loss, {}

    @torch.no_grad()
    def evaluate(self, batch):
        """MSE against the noise-free target plus the noise variance (the paper's "test MSE")."""
        err = self(batch["context"], batch["query"]) - batch["target"]
        return {"mse": float(err.pow(2).mean()) + self.noise_var}

    # ------------------------------------------------------------------ weight-space read-outs

    def kq_matrices(self) -> Tensor:
        """``(H, d+1, d+1)``: ``W_KQ[h] = Q_h^T K_h`` (the logit is ``scale * z_q^T W_KQ z_i``)."""
        w = self.dim + 1
        q = self.attn.score.q.weight.view(self.heads, w, w)                     # (H, Dh, d+1)
        k = self.attn.score.k.weight.view(self.heads, w, w)
        return q.transpose(1, 2) @ k

    def ov_matrices(self) -> Tensor:
        """``(H, d+1)``: ``W_OV[h] = O_h V_h``."""
        w = self.dim + 1
        o = self.attn.update.proj.weight.view(self.heads, w)                   # (H, Dv)
        v = self.attn.message.v.weight.view(self.heads, w, w)                   # (H, Dv, d+1)
        return torch.einsum("hv,hvd->hd", o, v)

    @torch.no_grad()
    def omega_mu(self) -> tuple[Tensor, Tensor]:
        """Per-head ``omega_h`` (effective logit coefficient, scale included) and ``mu_h``, each ``(H,)``."""
        kq = self.kq_matrices()
        omega = torch.diagonal(kq[:, : self.dim, : self.dim], dim1=1, dim2=2).mean(-1) * self.attn.score.scale
        return omega, self.ov_matrices()[:, -1]

    def diagnostics(self):
        omega, mu = self.omega_mu()
        out = {f"omega_{h}": float(omega[h]) for h in range(self.heads)}
        out.update({f"mu_{h}": float(mu[h]) for h in range(self.heads)})
        return out
