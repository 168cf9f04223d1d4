"""Two-layer attention-only network for in-context classification (the induction-head study).

Reddy, "The mechanistic basis of data dependence and abrupt learning in an in-context classification
task", ICLR 2024, https://arxiv.org/abs/2312.03002 (layout of the author's ``transformer_v2.py``).

.. math::
    h^{(1)} = x + \\mathrm{softmax}_{\\text{causal}}\\big((x W_Q^{1\\top})(x W_K^{1\\top})^\\top\\big)\\, x W_V^{1\\top},\\quad
    h^{(2)}_q = h^{(1)}_q + \\mathrm{softmax}\\big((h^{(1)}_q W_Q^{2\\top})(h^{(1)} W_K^{2\\top})^\\top\\big)\\, h^{(1)} W_V^{2\\top}

then a 3-layer ReLU MLP (one scalar bias per layer, no residual) on the query token and a bias-free linear
read-out to the ``L`` label logits. Each attention layer is the core's :class:`GraphAttention` (dense path):
a single-head :class:`DotProductScore` with **scale 1** (no ``1/sqrt(d)``), a bias-free value message, no
output projection (update ``"none"``; the residual sum is written here) and no LayerNorm. Init as the
author's scripts: attention weights ``N(0, 1/D)`` (``D`` the item width), MLP weights ``N(0, 2/W)`` with
biases ``N(0, 1/W)``, read-out ``N(0, 1/W)`` (``W`` the token width).

Deviation (cost only, same function): layer 2 and the MLP are computed for the query token alone, the only
token the read-out uses; layer 2 still attends over all tokens (the query is last, so causality holds).

Progress measures (read through :func:`graphattn.interpret.capture_attention`): the *previous-token score*
(mean layer-1 weight from each label token to the item just before it) and the *induction score* (layer-2
weight from the query to the label tokens that follow items of the query's class).

Args (config keys): icl_mlp_layers.

Shapes: tokens (B, 2N+1, W) -> logits (B, L).
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from graphattn.attention import DotProductScore, GraphAttention, ValueMessage
from graphattn.interpret import capture_attention
from graphattn.registry import register_model

from .base import ICLModel

__all__ = ["InductionNet", "previous_token_score", "induction_score"]


def _head(width: int) -> GraphAttention:
    score = DotProductScore(width, width, heads=1, head_dim=width, scale=1.0, bias=False)
    return GraphAttention(width, heads=1, head_dim=width, score=score,
                          message=ValueMessage(width, 1, width, bias=False), update="none")


class ScalarBiasLinear(nn.Module):
    """``x W^T + b`` with one scalar bias ``b`` (the paper's MLP layers)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(width, width))
        self.bias = nn.Parameter(torch.empty(1))

    def forward(self, x: Tensor) -> Tensor:
        return x @ self.weight.T + self.bias


def previous_token_score(layer1: Tensor) -> Tensor:
    """Mean weight from each label token (odd positions before the query) to the item just before it.

    ``layer1``: (B, H, T, T) weights of the first layer -> (B,)."""
    T = layer1.shape[-1]
    labels = torch.arange(1, T - 1, 2, device=layer1.device)
    return layer1[..., labels, labels - 1].mean(dim=(1, 2))


def induction_score(layer2_query: Tensor, classes: Tensor) -> Tensor:
    """Weight from the query to the label tokens that follow items of the query's class.

    ``layer2_query``: (B, H, 1, T) weights of the query in layer 2; ``classes``: (B, N + 1) class ids (the
    last is the query's) -> (B,)."""
    N = classes.shape[1] - 1
    match = (classes[:, :N] == classes[:, N:]).to(layer2_query.dtype)           # (B, N)
    to_labels = layer2_query[:, :, 0, 1:2 * N:2]                                # (B, H, N)
    return (to_labels * match[:, None]).sum(-1).mean(1)


@register_model("InductionNet", task="icl")
class InductionNet(ICLModel):
    data_kind = "classification"

    def __init__(self, config: Mapping[str, Any], data: Any) -> None:
        super().__init__(config, data)
        cfg = data.config
        self.width, self.num_labels, self.seq_len, self.item_dim = cfg.width, cfg.num_labels, cfg.seq_len, cfg.dim
        n_mlp = int(config["icl_mlp_layers"])
        if n_mlp < 0:
            raise ValueError(f"icl_mlp_layers must be >= 0, got {n_mlp}")
        self.layer1, self.layer2 = _head(self.width), _head(self.width)
        self.mlp = nn.ModuleList(ScalarBiasLinear(self.width) for _ in range(n_mlp))
        self.readout = nn.Linear(self.width, self.num_labels, bias=False)
        self.register_buffer("causal", torch.ones(self.seq_len, self.seq_len, dtype=torch.bool).tril(), persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        std = 1 / math.sqrt(self.width)
        for layer in (self.layer1, self.layer2):
            for p in layer.parameters():
                nn.init.normal_(p, 0.0, 1 / math.sqrt(self.item_dim))
        for lin in self.mlp:
            nn.init.normal_(lin.weight, 0.0, math.sqrt(2 / self.width))
            nn.init.normal_(lin.bias, 0.0, std)
        nn.init.normal_(self.readout.weight, 0.0, std)

    def forward(self, tokens: Tensor) -> Tensor:
        if tokens.dim() != 3 or tokens.shape[1:] != (self.seq_len, self.width):
            raise ValueError(f"tokens must be (B, {self.seq_len}, {self.width}), got {tuple(tokens.shape)}")
        h = tokens + self.layer1(tokens, mask=self.causal)                      # (B, T, W)
        q = h[:, -1:] + self.layer2(h[:, -1:], x_src=h)                         # (B, 1, W)
        z = q[:, 0]
        for lin in self.mlp:
            z = F.relu(lin(z))
        return self.readout(z)                                                  # (B, L)

    def loss(self, batch):
        logits = self(batch["tokens"])
        loss = F.cross_entropy(logits, batch["target"])
        return loss, {"accuracy": float((logits.argmax(-1) == batch["target"]).float().mean())}

    @torch.no_grad()
    def evaluate(self, batch):
        """Accuracy, loss, the share of predictions that are one of the context's labels, and both
        attention progress measures."""
        with capture_attention(self) as store:
            logits = self(batch["tokens"])
        pred = logits.argmax(-1)
        in_context = (pred[:, None] == batch["context_labels"]).any(-1)
        return {"accuracy": float((pred == batch["target"]).float().mean()),
                "loss": float(F.cross_entropy(logits, batch["target"])),
                "context_label": float(in_context.float().mean()),
                "prev_token": float(previous_token_score(store["layer1"][0]).mean()),
                "induction": float(induction_score(store["layer2"][0], batch["classes"]).mean())}
