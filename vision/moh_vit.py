r"""MoH: Multi-Head Attention as Mixture-of-Head Attention (Jin, Zhu, Yuan, Yan, 2024,
https://arxiv.org/abs/2410.11842; routing and scalings of the official ``MoH-DiT/models.py``).

MoH-ViT: the tiny pre-LN ViT of :mod:`vision.tiny_vit` whose attention is
:class:`graphattn.attention.moh.MoHAttention`: ``Hs`` shared heads always active, and per token the top-``K``
of the ``Hr = H - Hs`` routed heads, each head's output scaled by its gate before the output projection,

.. math::
    y_t = W_O \big\Vert_h g_{t,h} O_{t,h}, \qquad
    g_{t,h} = a_1 H_s \mathrm{softmax}(W_s x_t)_h \ (\text{shared}), \quad
              a_2 K \tilde p_{t,h} \ (\text{routed, in the top-}K), \quad 0 \ (\text{otherwise}),

trained with ``L = CE + beta * mean_l L_b^{(l)}``, the load-balance loss
``L_b = Hr sum_i P_i f_i`` of each block's router averaged over the blocks (coefficient ``balance_coeff``
0.01, the MoH-DiT default). The forward pass stores that term in training mode; :meth:`aux_loss` returns it,
and the default ``compute_loss`` adds it. ``attention: mha`` replaces MoH by plain multi-head attention
(:class:`graphattn.attention.GraphAttention`, same sizes, no aux loss): the baseline.

This is the "MoH-ViT" of ``experiments/primitives_digits.py --which moh`` (ours; the paper gives no digits
recipe): patch 2 on 8x8 (16 tokens), width 64, 4 blocks, 8 heads, MLP x2; README (3 seeds, 20 epochs):
MoH 75 % (4 shared + 2 of 4) 0.921, MoH 50 % (2 shared + 2 of 6) 0.932, MHA 0.943.

Args (``vision/model/MoHViT.yaml``):
    patch_size (2), embed_dim (64), depth (4), num_heads (8), mlp_ratio (2.0): the tiny ViT;
    attention ("moh" | "mha"), shared_heads (4), top_k (2; 1 <= top_k <= num_heads - shared_heads, or 0 for
    dense MoH with all heads shared), balance_coeff (0.01; 0 = no balance loss).
    From the dataset: ``meta["in_channels"]``, ``meta["image_size"]`` (divisible by patch_size), num_classes.

Shapes:
    x (B, C_in, S, S) -> logits (B, num_classes); ``forward_features(x)["extras"]``: one
    :class:`graphattn.attention.moh.MoHRouting` per block (gates (B, N, H), probs (B, N, Hr), topk (B, N, K),
    balance_loss, active_fraction); N = (S / patch_size)^2.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from graphattn.attention import GraphAttention
from graphattn.attention.moh import MoHAttention
from graphattn.registry import register_model
from vision.base import VisionData
from vision.tiny_vit import TinyViTClassifier

__all__ = ["MoHViT", "RoutedMoH"]


class RoutedMoH(nn.Module):
    """:class:`MoHAttention` that always returns ``(out, routing)`` (the block passes the routing on).

    Shapes: x (B, N, D) -> (B, N, D), MoHRouting.
    """

    def __init__(self, dim: int, heads: int, shared_heads: int, top_k: int):
        super().__init__()
        self.moh = MoHAttention(dim, heads, shared_heads, top_k)

    def forward(self, x: Tensor):
        return self.moh(x, return_routing=True)


@register_model("MoHViT", task="vision")
class MoHViT(TinyViTClassifier):
    """Tiny ViT with mixture-of-head attention and its balance loss; see the module docstring."""

    def __init__(self, config: Any, data: VisionData) -> None:
        super().__init__(config, data)
        self.attention = str(config["attention"])
        if self.attention not in ("moh", "mha"):
            raise ValueError(f"attention: expected 'moh' or 'mha', got {self.attention!r}")
        self.shared_heads, self.top_k = int(config["shared_heads"]), int(config["top_k"])
        self.balance_coeff = float(config["balance_coeff"])
        if self.balance_coeff < 0:
            raise ValueError(f"balance_coeff: expected a float >= 0, got {self.balance_coeff}")
        if self.attention == "moh":
            self.build(lambda i: RoutedMoH(self.dim, self.heads, self.shared_heads, self.top_k))
        else:
            self.build(lambda i: GraphAttention(self.dim, self.dim, self.heads))
        self._aux: Tensor | None = None

    def forward(self, x: Tensor) -> Tensor:
        logits, routings = self.vit(x)
        self._aux = None
        if self.training and routings and self.balance_coeff > 0:
            self._aux = self.balance_coeff * torch.stack([r.balance_loss for r in routings]).mean()
        return logits

    def aux_loss(self) -> Tensor:
        """``balance_coeff * mean over blocks of L_b`` of the last training-mode forward; 0 otherwise."""
        if self._aux is None or not self.training:
            return super().aux_loss()
        return self._aux
