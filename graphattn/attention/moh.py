"""Mixture-of-Head attention: shared and routed heads, gated per token.

Letters in shape comments: B batch, N tokens (receivers), M keys, H heads (Hs shared first, then Hr routed),
K routed heads kept per token (top-k), Dh/Dv head widths.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layer import GraphAttention
from .normalizers import Normalizer
from .scores import Score

__all__ = ["MoHAttention", "MoHRouting", "load_balance_loss"]


@dataclass
class MoHRouting:
    """What the router decided for one call.

    ``gates``: ``(..., N, H)`` per-(token, head) multipliers (0 for unselected routed heads);
    ``probs``: ``(..., N, Hr)`` routed softmax before top-k; ``topk``: ``(..., N, K)`` selected routed heads;
    ``balance_loss``: scalar load-balancing loss on the routed heads; ``active_fraction``: fraction of
    (token, head) pairs with a non-zero gate.
    """

    gates: Tensor
    probs: Tensor | None
    topk: Tensor | None
    balance_loss: Tensor
    active_fraction: Tensor


def load_balance_loss(probs: Tensor, topk: Tensor, num_routed: int, token_mask: Tensor | None = None) -> Tensor:
    r"""MoH's balance loss on routed heads, :math:`L_b = H_r \sum_i P_i f_i`.

    :math:`P_i` is the mean routed probability of head ``i`` over tokens (before top-k) and :math:`f_i` the
    fraction of tokens whose top-K contains ``i``. Perfectly uniform routing (:math:`P_i = 1/H_r`,
    :math:`f_i = K/H_r`) gives :math:`L_b = K`.

    Shapes: probs (..., Hr), topk (..., K), token_mask (...) bool -> scalar.
    """
    p = probs.reshape(-1, num_routed)
    chosen = F.one_hot(topk.reshape(-1, topk.shape[-1]), num_routed).sum(-2).to(p.dtype)   # (T, Hr)
    if token_mask is not None:
        keep = token_mask.reshape(-1)
        p, chosen = p[keep], chosen[keep]
    if p.shape[0] == 0:
        return probs.new_zeros(())
    return num_routed * (p.mean(0) * chosen.mean(0)).sum()


class MoHAttention(nn.Module):
    r"""Mixture-of-Head attention on any token graph.

    Jin, Zhu, Yuan, Yan, "MoH: Multi-Head Attention as Mixture-of-Head Attention", 2024,
    https://arxiv.org/abs/2410.11842 (routing and scalings of the official ``MoH-DiT/models.py``).

    .. math::
        y_t = W_O\, \big\Vert_h\, g_{t,h}\, O_{t,h},\qquad
        g_{t,h} = \begin{cases} a_1\, H_s\, \mathrm{softmax}(W_s x_t)_h & h \text{ shared} \\
                                a_2\, K\, \tilde p_{t,h} & h \text{ routed, in the top-}K \\ 0 & \text{otherwise}
                  \end{cases}

    with :math:`p = \mathrm{softmax}(W_r x_t)` over the routed heads, :math:`\tilde p` its top-K renormalised
    to sum 1, and :math:`(a_1, a_2) = 2\,\mathrm{softmax}(W_0 x_t)`. The scalings make every gate about 1 at
    initialisation (routers start near zero), i.e. MoH starts as multi-head attention. ``O_{t,h}`` is head
    ``h`` of a :class:`GraphAttention` layer (any score / normaliser; update ``"none"``) on either path: the
    gate multiplies the aggregated head outputs before the output projection ``W_O``.

    Special cases (as in the official code): ``top_k = 0`` makes every head shared (dense MoH: learned
    shared gates over all ``H`` heads, times ``H``); ``shared_heads = 0`` leaves only routed gates
    (:math:`K \tilde p`, no :math:`a_2`).

    ``impl="routed"`` (dense path only) computes each routed head only for the tokens routed to it
    (index-select the queries, attend over that head's keys/values, scatter back), so the attention cost of
    routed heads follows the active fraction. ``impl="dense"`` computes every head and multiplies by the
    gate (the official code). Both give the same output. The routed path needs a dot-product score (its
    parameters are per-head projections that can be sliced); other scores, calls with attention hooks on
    ``self.attn`` and the sparse path always compute every head.

    Args:
        dim: token width D (input and output).
        heads: total heads H.
        shared_heads: always-active heads Hs (the first Hs heads).
        top_k: routed heads kept per token K (0 <= K <= H - Hs; 0 only when Hs = H or for dense MoH).
        head_dim: per-head width (default ``dim // heads``).
        score, normalizer: passed to :class:`GraphAttention` (default scaled dot product + softmax).
        dropout: attention dropout.
        router_std: std of the routers' normal initialisation (0.02; small so gates start near 1).
        impl: ``"dense" | "routed"``.
        bias: bias of the q/k/v and output projections.

    Shapes:
        sparse: x (N, D), edge_index (2, E) -> (N, D)
        dense: x (B, N, D), mask (N, M) | (B, N, M) | (B, 1|H, N, M), key_padding_mask (B, M) -> (B, N, D)
    """

    def __init__(self, dim: int, heads: int, shared_heads: int, top_k: int, head_dim: int | None = None, *,
                 score: str | Score = "dot", normalizer: str | Normalizer = "dst_softmax", dropout: float = 0.0,
                 router_std: float = 0.02, impl: str = "dense", bias: bool = True):
        super().__init__()
        if not 0 <= shared_heads <= heads:
            raise ValueError(f"shared_heads must lie in [0, heads={heads}], got {shared_heads}")
        if top_k == 0:
            shared_heads = heads                                      # dense MoH: all heads shared
        routed = heads - shared_heads
        if not (1 <= top_k <= routed if routed else top_k == 0):
            raise ValueError(f"top_k must lie in [1, heads - shared_heads = {routed}] (or be 0 for dense MoH), "
                             f"got {top_k}")
        if impl not in ("dense", "routed"):
            raise ValueError(f"impl must be 'dense' or 'routed', got {impl!r}")
        head_dim = dim // heads if head_dim is None else head_dim
        self.dim, self.heads, self.head_dim = dim, heads, head_dim
        self.shared_heads, self.routed_heads, self.top_k = shared_heads, routed, top_k
        self.router_std, self.impl = router_std, impl
        self.attn = GraphAttention(dim, heads * head_dim, heads, head_dim, score=score, normalizer=normalizer,
                                   message="value", update="none", dropout=dropout, bias=bias)
        self.proj = nn.Linear(heads * self.attn.message.value_dim, dim, bias=bias)
        self.router = nn.Linear(dim, routed, bias=False) if routed else None
        self.shared_router = nn.Linear(dim, shared_heads, bias=False) if shared_heads else None
        self.mix = nn.Linear(dim, 2, bias=False) if routed and shared_heads else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.attn.reset_parameters()
        self.proj.reset_parameters()
        for lin in (self.router, self.shared_router, self.mix):
            if lin is not None:
                nn.init.normal_(lin.weight, std=self.router_std)

    def extra_repr(self) -> str:
        return f"heads={self.heads}, shared={self.shared_heads}, routed={self.routed_heads}, top_k={self.top_k}"

    @property
    def expected_active_fraction(self) -> float:
        return (self.shared_heads + self.top_k) / self.heads

    # ------------------------------------------------------------------------------------------ routing

    def route(self, x: Tensor, token_mask: Tensor | None = None) -> MoHRouting:
        """Gates for tokens ``x (..., N, D)``; ``token_mask`` (..., N) excludes padding from the balance loss."""
        hs, hr, k = self.shared_heads, self.routed_heads, self.top_k
        parts, probs, top = [], None, None
        if hr:
            probs = torch.softmax(self.router(x), dim=-1)                          # (..., N, Hr)
            kept, top = probs.topk(k, dim=-1)                                      # (..., N, K)
            kept = kept / kept.sum(-1, keepdim=True).clamp_min(1e-9) * k
            routed = torch.zeros_like(probs).scatter(-1, top, kept)
        if hs:
            shared = torch.softmax(self.shared_router(x), dim=-1) * hs             # (..., N, Hs)
        if hs and hr:
            a = 2 * torch.softmax(self.mix(x), dim=-1)                              # (..., N, 2)
            parts = [a[..., :1] * shared, a[..., 1:] * routed]
        else:
            parts = [shared] if hs else [routed]
        gates = torch.cat(parts, dim=-1)                                           # (..., N, H)
        loss = (load_balance_loss(probs, top, hr, token_mask) if hr else x.new_zeros(()))
        active = gates != 0
        if token_mask is not None:
            active = active[token_mask]
        return MoHRouting(gates, probs, top, loss, active.to(gates.dtype).mean())

    # ------------------------------------------------------------------------------------------ forward

    def forward(self, x: Tensor, edge_index: Tensor | None = None, *, mask: Tensor | None = None,
                key_padding_mask: Tensor | None = None, gates: Tensor | None = None, impl: str | None = None,
                return_routing: bool = False):
        """``gates`` (..., N, H) overrides the router (e.g. all ones gives plain multi-head attention)."""
        impl = self.impl if impl is None else impl
        if impl not in ("dense", "routed"):
            raise ValueError(f"impl must be 'dense' or 'routed', got {impl!r}")
        token_mask = key_padding_mask.bool() if key_padding_mask is not None and \
            key_padding_mask.shape == x.shape[:-1] else None
        routing = self.route(x, token_mask)
        if gates is not None:
            if gates.shape != x.shape[:-1] + (self.heads,):
                raise ValueError(f"gates must have shape {tuple(x.shape[:-1]) + (self.heads,)}, got {tuple(gates.shape)}")
            routing.gates = gates
        g = routing.gates
        if edge_index is not None:
            heads_out = self.attn(x, edge_index).unflatten(-1, (self.heads, -1))   # (N, H, Dv)
        elif impl == "routed" and not self.attn.has_hooks and self.attn.score.sdpa:
            heads_out = self._routed(x, g, mask, key_padding_mask)                 # (B, N, H, Dv)
        else:
            heads_out = self.attn(x, mask=mask, key_padding_mask=key_padding_mask).unflatten(-1, (self.heads, -1))
        out = self.proj((g.unsqueeze(-1) * heads_out).flatten(-2))
        return (out, routing) if return_routing else out

    def _attend(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        """Softmax-style attention of q (B, h, n, Dh) over k, v (B, h, M, D) with the layer's score/normaliser."""
        layer = self.attn
        if layer.score.sdpa and layer.normalizer.sdpa:
            empty = None
            if mask is not None:
                empty = ~mask.any(-1, keepdim=True)
                mask = mask | empty
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=layer.score.scale,
                                                 dropout_p=layer.dropout if self.training else 0.0)
            return out.masked_fill(empty, 0.0) if empty is not None else out
        # a non-SDPA normaliser over dot scores (the routed path is only taken for dot-product scores,
        # whose parameters are per-head projections, so slicing heads is safe)
        weights = layer._drop(layer.normalizer.dense(torch.matmul(q, k.transpose(-1, -2)) * layer.score.scale, mask))
        return torch.matmul(weights, v)

    def _routed(self, x: Tensor, gates: Tensor, mask: Tensor | None, key_padding_mask: Tensor | None) -> Tensor:
        layer, hs = self.attn, self.shared_heads
        if x.dim() != 3:
            raise ValueError(f"the routed fast path takes x of shape (B, N, D), got {tuple(x.shape)}")
        b, n, _ = x.shape
        q, k = layer.score.project(x, x)
        q, k = q.transpose(1, 2), k.transpose(1, 2)                                # (B, H, N, Dh), (B, H, M, Dh)
        v = layer.message.project(x).transpose(1, 2)                               # (B, H, M, Dv)
        mask = layer._dense_mask(mask, key_padding_mask, b)                        # (B|1, H|1, N, M) | None
        m_keys = k.shape[2]
        out = v.new_zeros(b, self.heads, n, v.shape[-1])
        if hs:
            ms = None if mask is None else mask[:, :hs] if mask.shape[1] > 1 else mask
            out[:, :hs] = self._attend(q[:, :hs], k[:, :hs], v[:, :hs], ms)
        active = (gates[..., hs:] != 0).transpose(1, 2)                            # (B, Hr, N)
        if not bool(active.any()):
            return out.transpose(1, 2)
        counts = active.sum(-1)                                                    # (B, Hr)
        width = int(counts.max())
        # active tokens first (stable: in token order), padded to the busiest (batch, head)
        sel = torch.argsort((~active).to(torch.int8), dim=-1, stable=True)[..., :width]  # (B, Hr, width)
        valid = torch.arange(width, device=x.device) < counts.unsqueeze(-1)       # (B, Hr, width)
        qr = q[:, hs:].gather(2, sel.unsqueeze(-1).expand(-1, -1, -1, q.shape[-1]))  # (B, Hr, width, Dh)
        mr = None
        if mask is not None:
            full = mask.expand(b, self.heads, n, m_keys)[:, hs:]                    # (B, Hr, N, M)
            mr = full.gather(2, sel.unsqueeze(-1).expand(-1, -1, -1, m_keys))
        res = self._attend(qr, k[:, hs:], v[:, hs:], mr)                            # (B, Hr, width, Dv)
        res = res * valid.unsqueeze(-1)
        routed = v.new_zeros(b, self.routed_heads, n, v.shape[-1])
        routed = routed.scatter_add(2, sel.unsqueeze(-1).expand_as(res), res)
        out[:, hs:] = routed
        return out.transpose(1, 2)                                                  # (B, N, H, Dv)
