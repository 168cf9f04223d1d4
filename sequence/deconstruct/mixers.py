"""The token mixers of "Deconstructing Attention" (Xue, Moosavi, Aletras, 2025, https://arxiv.org/abs/2510.11602)
as choices on the core's :class:`~graphattn.attention.GraphAttention` over the causal token graph.

| variant | edge weight ``w_ij`` (``j <= i``) | pieces here |
| --- | --- | --- |
| standard | ``softmax_j(q_i . k_j / sqrt(Dh))``, RoPE on q, k | :class:`RoPEDotScore` + softmax |
| approximate | ``f(s_ij) / sum_l f(s_il)``, ``f(s) = 1 + s + s^2 / 2`` | :class:`RoPEDotScore` + :class:`TaylorNormalizer`; linear time: :func:`taylor_linear_attention` |
| non-approximate | ``exp(s_j) / sum_{l<=i} exp(s_l)``, ``s_j = <SiLU(W_Q h_j), W_K h_j> / sqrt(Dh)`` | :class:`SelfGatedKeyScore` + softmax; recurrent form: :func:`running_softmax_average` |
| RndEmbQK / FixedSeqQK / StaticEmbQK | standard weights, but q, k computed from another stream | :class:`DecoderAttention` (``qk=`` argument) |
| MLP | self-loop only (no mixing) | :class:`GatedMLP` |

Letters in shape comments: B batch, H heads, N tokens, Dh key width per head, Dv value width, F Taylor features.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from graphattn.attention import AttentionInfo, DotProductScore, GraphAttention, Normalizer, Score

__all__ = ["rotary", "RoPEDotScore", "TaylorNormalizer", "taylor", "taylor_features", "taylor_linear_attention",
           "SelfGatedKeyScore", "running_softmax_average", "DecoderAttention", "GatedMLP"]


def rotary(x: Tensor, base: float = 10000.0) -> Tensor:
    """Rotary position embedding (Su et al. 2021; Qwen2.5's half-split layout) on ``(..., N, H, Dh)``."""
    n, dh = x.shape[-3], x.shape[-1]
    if dh % 2:
        raise ValueError(f"RoPE needs an even head width, got {dh}")
    inv = base ** (-torch.arange(0, dh, 2, device=x.device, dtype=torch.float32) / dh)      # (Dh/2,)
    angle = torch.arange(n, device=x.device, dtype=torch.float32)[:, None] * inv[None]      # (N, Dh/2)
    cos, sin = angle.cos().to(x.dtype)[:, None, :], angle.sin().to(x.dtype)[:, None, :]     # (N, 1, Dh/2)
    x1, x2 = x[..., : dh // 2], x[..., dh // 2:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


class RoPEDotScore(DotProductScore):
    """Scaled dot product of rotary-embedded queries and keys, ``RoPE(q_i) . RoPE(k_j) / sqrt(Dh)``.

    Still a scaled dot product of the projected vectors, so the dense path may use fused SDPA.
    Args: as :class:`~graphattn.attention.DotProductScore`, plus ``rope`` (False: plain dot product).
    """

    def __init__(self, dst_dim: int, src_dim: int, heads: int, head_dim: int, bias: bool = False, rope: bool = True):
        super().__init__(dst_dim, src_dim, heads, head_dim, bias=bias)
        self.rope = bool(rope)

    def project(self, x_dst, x_src):
        q, k = super().project(x_dst, x_src)
        return (rotary(q), rotary(k)) if self.rope else (q, k)


def taylor(s: Tensor) -> Tensor:
    """Second-order Taylor polynomial of ``exp``: ``1 + s + s^2 / 2`` (always >= 1/2, so a valid weight)."""
    return 1.0 + s + 0.5 * s * s


class TaylorNormalizer(Normalizer):
    """``w_ij = f(s_ij) / sum_l f(s_il)`` over the edges that exist, ``f`` = :func:`taylor` (Approximate variant)."""

    def edge(self, scores, edge_index, num_dst, num_src):
        from graphattn.ops import segment_sum
        f = taylor(scores)
        return f / segment_sum(f, edge_index[1], num_dst)[edge_index[1]]

    def dense(self, scores, mask):
        f = taylor(scores)
        if mask is not None:
            f = f.masked_fill(~mask, 0.0)
        return f / f.sum(-1, keepdim=True).clamp_min(torch.finfo(f.dtype).tiny)


def taylor_features(x: Tensor) -> Tensor:
    """``phi(x) = [1, x / Dh^(1/4), vec(x x^T) / (sqrt(2) sqrt(Dh))]`` so that ``phi(q) . phi(k) = taylor(q.k / sqrt(Dh))``.

    Shapes: (..., Dh) -> (..., F) with F = 1 + Dh + Dh^2.
    """
    dh = x.shape[-1]
    outer = (x.unsqueeze(-1) * x.unsqueeze(-2)).flatten(-2) / math.sqrt(2.0 * dh)
    return torch.cat([torch.ones_like(x[..., :1]), x / dh ** 0.25, outer], dim=-1)


def taylor_linear_attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    r"""Causal Taylor attention in linear time from running sums (Based-style, the paper's Appendix I).

    :math:`o_i = \phi(q_i)^T S_i / \phi(q_i)^T z_i` with :math:`S_i = \sum_{j \le i} \phi(k_j) v_j^T` and
    :math:`z_i = \sum_{j \le i} \phi(k_j)`, i.e. the zeroth-, first- and second-order key/value statistics.
    Memory O(N F Dv) per head (a cumulative sum), time linear in N.

    Shapes: q, k (B, H, N, Dh), v (B, H, N, Dv) -> (B, H, N, Dv).
    """
    fq, fk = taylor_features(q), taylor_features(k)                                  # (B, H, N, F)
    state = torch.cumsum(fk.unsqueeze(-1) * v.unsqueeze(-2), dim=2)                   # (B, H, N, F, Dv)
    norm = torch.cumsum(fk, dim=2)                                                    # (B, H, N, F)
    num = torch.einsum("bhnf,bhnfe->bhne", fq, state)
    return num / (fq * norm).sum(-1, keepdim=True)


class SelfGatedKeyScore(Score):
    r"""Query-independent key score of the Non-approximate variant:
    :math:`s_{ij} = s_j = \langle \mathrm{SiLU}(W_Q h_j), W_K h_j\rangle / \sqrt{D_h}` for every receiver ``i``.

    Both projections read the sender; the receiver is ignored. With the usual softmax over a receiver's
    causal edges this is the self-gated running average
    :math:`o_i = \sum_{j\le i} e^{s_j} v_j / \sum_{j \le i} e^{s_j}` (:func:`running_softmax_average`).

    Shapes: project -> gate (..., N, H, Dh), key (..., N, H, Dh); dense -> (B, H, Nq, Nk) (constant along Nq);
    edge -> (E, H).
    """

    def __init__(self, dim: int, heads: int, head_dim: int, bias: bool = False):
        super().__init__()
        self.heads, self.head_dim, self.scale = heads, head_dim, head_dim ** -0.5
        self.q = nn.Linear(dim, heads * head_dim, bias=bias)
        self.k = nn.Linear(dim, heads * head_dim, bias=bias)

    def reset_parameters(self) -> None:
        self.q.reset_parameters()
        self.k.reset_parameters()

    def project(self, x_dst, x_src):
        gate = F.silu(self.q(x_src)).unflatten(-1, (self.heads, self.head_dim))
        return gate, self.k(x_src).unflatten(-1, (self.heads, self.head_dim))

    def key_scores(self, gate: Tensor, key: Tensor) -> Tensor:
        """``(..., N, H, Dh)`` x 2 -> the scalar score of every sender ``(..., N, H)``."""
        return (gate * key).sum(-1) * self.scale

    def edge(self, q, k, edge_index, edge_type=None):
        return self.key_scores(q, k).index_select(0, edge_index[0])

    def dense(self, q, k):
        s = (q * k).sum(-1) * self.scale                                      # (B, H, Nk) (q, k both per sender)
        return s.unsqueeze(-2).expand(*s.shape[:-1], s.shape[-1], s.shape[-1])


def running_softmax_average(s: Tensor, v: Tensor) -> Tensor:
    """The recurrent form of the Non-approximate mixer, one token at a time with a running max (stable):
    ``m_i = max(m_{i-1}, s_i)``, ``z_i = z_{i-1} e^{m_{i-1} - m_i} + e^{s_i - m_i}``, same for the numerator.

    Shapes: s (B, H, N), v (B, H, N, Dv) -> (B, H, N, Dv). A reference (a Python loop over N).
    """
    m = torch.full_like(s[..., 0], -math.inf)
    z = torch.zeros_like(s[..., 0])
    num = torch.zeros_like(v[..., 0, :])
    out = []
    for i in range(s.shape[-1]):
        m_new = torch.maximum(m, s[..., i])
        decay = torch.exp(m - m_new)
        w = torch.exp(s[..., i] - m_new)
        z = z * decay + w
        num = num * decay.unsqueeze(-1) + w.unsqueeze(-1) * v[..., i, :]
        m = m_new
        out.append(num / z.unsqueeze(-1))
    return torch.stack(out, dim=-2)


class DecoderAttention(GraphAttention):
    """The core layer on a causal token sequence, with queries and keys optionally read from another stream.

    ``forward(x, mask, qk=None)``: values come from ``x``; queries and keys from ``qk`` when given (RndEmbQK,
    FixedSeqQK: a fixed sequence pushed through the earlier blocks, shape ``(1, N, D)``, shared by the batch;
    StaticEmbQK: the static token embeddings ``(B, N, D)``), else from ``x`` (self-attention). Score and
    attention hooks, and therefore :mod:`graphattn.interpret`, see every call. Fast paths, taken only when
    nobody asked for the weights and no hook is registered: fused SDPA for softmax dot products and, with
    ``linear=True`` and a :class:`TaylorNormalizer`, :func:`taylor_linear_attention`.

    Shapes: x (B, N, D), mask (N, N) bool (True = may attend), qk (B | 1, N, D) -> (B, N, out_dim).
    """

    def __init__(self, *args, linear: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.linear = bool(linear)

    def forward(self, x: Tensor, mask: Tensor | None = None, qk: Tensor | None = None,
                return_attention: bool = False):
        if x.dim() != 3:
            raise ValueError(f"DecoderAttention takes x of shape (B, N, D), got {tuple(x.shape)}")
        if qk is not None and (qk.dim() != 3 or qk.shape[1] != x.shape[1] or qk.shape[0] not in (1, x.shape[0])):
            raise ValueError(f"qk must be (1 or B, N, D) with N = {x.shape[1]}, got {tuple(qk.shape)}")
        src = x if qk is None else qk
        q, k = self.score.project(src, src)
        q, k = q.transpose(1, 2), k.transpose(1, 2)                            # (B|1, H, N, Dh)
        v = self.message.project(x).transpose(1, 2)                            # (B, H, N, Dv)
        weights = None
        fast = not return_attention and not self.has_hooks and not (self.training and self.dropout > 0)
        if fast and self.score.sdpa and self.normalizer.sdpa:
            if q.shape[0] != v.shape[0]:
                q, k = q.expand(v.shape[0], -1, -1, -1), k.expand(v.shape[0], -1, -1, -1)
            agg = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.score.scale)
        elif fast and self.linear and isinstance(self.normalizer, TaylorNormalizer):
            if q.shape[0] != v.shape[0]:
                q, k = q.expand(v.shape[0], -1, -1, -1), k.expand(v.shape[0], -1, -1, -1)
            agg = _taylor_scaled(q, k, v, self.score.scale)
        else:
            scores = self.score.dense(q, k)                                    # (B|1, H, N, N)
            if self._score_hooks:
                scores = self._run_hooks(scores, AttentionInfo("dense", self.heads, mask=mask), self._score_hooks, "score")
            weights = self.normalizer.dense(scores, mask)
            if self._attention_hooks:
                weights = self._run_hooks(weights, AttentionInfo("dense", self.heads, mask=mask))
            weights = self._drop(weights)
            agg = torch.matmul(weights, v)                                     # (B, H, N, Dv)
        out = self.update(x, agg.transpose(1, 2).flatten(-2))
        return (out, weights) if return_attention else out


def _taylor_scaled(q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
    """:func:`taylor_linear_attention` for a score ``scale * q.k`` (the features assume ``q.k / sqrt(Dh)``)."""
    c = (scale * q.shape[-1] ** 0.5) ** 0.5
    return taylor_linear_attention(q * c, k * c, v)


class GatedMLP(nn.Module):
    """SwiGLU MLP ``W_down(SiLU(W_gate h) * W_up h)`` (Qwen2.5's MLP; also the MLP variant's mixer, which
    lets each token attend only to itself). Shapes: (..., D) -> (..., D)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.gate = nn.Linear(dim, hidden, bias=False)
        self.up = nn.Linear(dim, hidden, bias=False)
        self.down = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.down(F.silu(self.gate(x)) * self.up(x))
