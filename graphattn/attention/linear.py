"""Kernelised linear attention (CARE's ELU+1 form) as a star graph through one virtual node per graph.

Letters in shape comments: B batch, N tokens, H heads, Dh key width per head, Dv value width per head,
G graphs (one virtual node each), E edges.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..ops import segment_sum
from .layer import GraphAttention
from .messages import Message, ValueMessage
from .normalizers import Normalizer
from .scores import Score

__all__ = ["elu_feature_map", "KernelScore", "KernelNormalizer", "HeadSplitMessage", "LinearAttention",
           "linear_attention_star"]


def elu_feature_map(x: Tensor) -> Tensor:
    """The positive feature map ``phi(z) = ELU(z) + 1`` (Katharopoulos et al., 2020; CARE)."""
    return F.elu(x) + 1.0


class KernelScore(Score):
    """Kernel score ``phi(q_i) . phi(k_j)`` with ``phi = ELU + 1`` (non-negative, no softmax).

    Args:
        dst_dim, src_dim: feature sizes of receivers and senders.
        heads: H; head_dim: Dh.
        bias: bias of the q/k projections.

    Shapes: project -> q (..., Nq, H, Dh), k (..., Nk, H, Dh) (before the feature map);
    edge -> (E, H); dense: q (B, H, Nq, Dh), k (B, H, Nk, Dh) -> (B, H, Nq, Nk).
    """

    def __init__(self, dst_dim: int, src_dim: int, heads: int, head_dim: int, bias: bool = True):
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        self.q = nn.Linear(dst_dim, heads * head_dim, bias=bias)
        self.k = nn.Linear(src_dim, heads * head_dim, bias=bias)

    def reset_parameters(self) -> None:
        self.q.reset_parameters()
        self.k.reset_parameters()

    def project(self, x_dst, x_src):
        return (self.q(x_dst).unflatten(-1, (self.heads, self.head_dim)),
                self.k(x_src).unflatten(-1, (self.heads, self.head_dim)))

    def edge(self, q, k, edge_index, edge_type=None):
        return (elu_feature_map(q).index_select(0, edge_index[1]) * elu_feature_map(k).index_select(0, edge_index[0])).sum(-1)

    def dense(self, q, k):
        return torch.matmul(elu_feature_map(q), elu_feature_map(k).transpose(-1, -2))


class KernelNormalizer(Normalizer):
    r"""Normalise non-negative scores by their sum over each receiver's incoming edges.

    CARE computes :math:`\frac{\phi(q_i)^T \frac1N \sum_j \phi(k_j) v_j^T}{\phi(q_i)^T \frac1N \sum_j
    \phi(k_j) + \epsilon}`, i.e. :math:`w_{ij} = s_{ij} / (\sum_l s_{il} + \deg(i)\,\epsilon)` with
    ``deg(i)`` the number of keys of ``i`` (``N`` on a complete graph). A receiver without edges gets nothing.
    """

    def __init__(self, eps: float = 1e-6):
        super().__init__()
        self.eps = float(eps)

    def edge(self, scores, edge_index, num_dst, num_src):
        dst = edge_index[1]
        total = segment_sum(scores, dst, num_dst)                                    # (N, H)
        deg = torch.bincount(dst, minlength=num_dst).to(scores.dtype).unsqueeze(-1)  # (N, 1)
        return scores / (total + deg * self.eps)[dst]

    def dense(self, scores, mask):
        if mask is not None:
            scores = scores.masked_fill(~mask, 0.0)
            deg = mask.to(scores.dtype).sum(-1, keepdim=True).expand_as(scores[..., :1])
        else:
            deg = torch.full_like(scores[..., :1], scores.shape[-1])
        denom = scores.sum(-1, keepdim=True) + deg * self.eps
        return scores / denom.clamp_min(torch.finfo(scores.dtype).tiny)


class HeadSplitMessage(Message):
    """The sender's features cut into H equal chunks, one per head (CARE's value ``v = X_g``: no projection).

    Shapes: x_src (..., N, D) -> (..., N, H, D / H).
    """

    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim ({dim}) must be divisible by heads ({heads})")
        self.heads, self.value_dim = heads, dim // heads

    def project(self, x_src):
        return x_src.unflatten(-1, (self.heads, self.value_dim))


def linear_attention_star(q: Tensor, k: Tensor, v: Tensor, batch: Tensor | None = None,
                          num_graphs: int | None = None, eps: float = 1e-6) -> Tensor:
    r"""Linear attention as two message passes through one virtual node per graph (O(N) edges).

    Pass 1 (tokens -> virtual node ``g``, mean aggregation): :math:`S_g = \frac1{N_g}\sum_{j \in g}
    \phi(k_j) v_j^T` and :math:`z_g = \frac1{N_g}\sum_{j\in g}\phi(k_j)`.
    Pass 2 (virtual node -> tokens): :math:`o_i = \phi(q_i)^T S_g / (\phi(q_i)^T z_g + \epsilon)`.

    Args:
        q, k: un-featured queries/keys (N, H, Dh); v: values (N, H, Dv).
        batch: (N,) graph id of each token (default: one graph); num_graphs: G.

    Returns: (N, H, Dv).
    """
    n = q.shape[0]
    if batch is None:
        batch = torch.zeros(n, dtype=torch.long, device=q.device)
        num_graphs = 1
    elif num_graphs is None:
        num_graphs = int(batch.max()) + 1 if n else 0
    fq, fk = elu_feature_map(q), elu_feature_map(k)
    count = torch.bincount(batch, minlength=num_graphs).clamp_min(1).to(q.dtype)          # (G,)
    # pass 1: every token j sends phi(k_j) v_j^T and phi(k_j) along its edge j -> virtual(batch_j)
    state = segment_sum(fk.unsqueeze(-1) * v.unsqueeze(-2), batch, num_graphs)             # (G, H, Dh, Dv)
    state = state / count.view(-1, 1, 1, 1)
    norm = segment_sum(fk, batch, num_graphs) / count.view(-1, 1, 1)                       # (G, H, Dh)
    # pass 2: virtual(batch_i) sends (S, z) to token i, which reads them with phi(q_i)
    num = torch.einsum("nhd,nhde->nhe", fq, state[batch])                                 # (N, H, Dv)
    den = (fq * norm[batch]).sum(-1, keepdim=True) + eps                                   # (N, H, 1)
    return num / den


class LinearAttention(nn.Module):
    r"""Kernelised linear attention with the ELU+1 feature map, as in CARE's global branch.

    Zhou et al., "CARE Transformer: Mobile-Friendly Linear Visual Transformer via Decoupled Dual
    Interaction", CVPR 2025, https://arxiv.org/abs/2411.16170 (``TokenMixer`` of the official code); the
    kernel form is Katharopoulos et al., "Transformers are RNNs", ICML 2020.

    .. math::
        o_i = \frac{\phi(q_i)^T \frac1N\sum_j \phi(k_j) v_j^T}{\phi(q_i)^T \frac1N \sum_j \phi(k_j) + \epsilon},
        \qquad \phi = \mathrm{ELU} + 1

    i.e. attention with weights ``phi(q_i).phi(k_j)`` normalised over keys. The module is a
    :class:`GraphAttention` with :class:`KernelScore`, :class:`KernelNormalizer` and (CARE) the raw input
    split into heads as values (:class:`HeadSplitMessage`, no value projection) and no output projection.
    ``impl`` chooses the computation:

    * ``"star"``: :func:`linear_attention_star` — two message passes through one virtual node per sequence
      (2N edges, O(N Dh Dv));
    * ``"dense"``: the layer's dense path on the ``N x N`` normalised kernel matrix (reference, O(N^2));
    * ``"sparse"``: the layer's sparse path on the complete graph (edges ``N^2``; for tests);
    * ``"fast"``: the star computation as batched contractions (``K^T V`` first) without per-token
      messages; the default.

    Args:
        dim: input width D.
        heads: H.
        head_dim: width of q/k per head (default ``dim // heads``).
        value: ``"identity"`` (CARE: v is the input split into heads, output width D) or ``"project"``
            (a value projection to ``heads * head_dim``).
        out_proj: add an output projection back to ``dim`` (CARE: False).
        eps: the denominator's epsilon (CARE: 1e-6, added after the 1/N scaling).
        impl: ``"fast" | "star" | "dense" | "sparse"``.

    Shapes:
        x (B, N, D) -> (B, N, D_out), or x (N, D) with ``batch`` (N,) -> (N, D_out).
    """

    def __init__(self, dim: int, heads: int = 1, head_dim: int | None = None, *, value: str = "identity",
                 out_proj: bool = False, eps: float = 1e-6, impl: str = "fast", qk_bias: bool = True):
        super().__init__()
        if impl not in ("fast", "star", "dense", "sparse"):
            raise ValueError(f"impl must be one of fast, star, dense, sparse; got {impl!r}")
        if value not in ("identity", "project"):
            raise ValueError(f"value must be 'identity' or 'project', got {value!r}")
        head_dim = dim // heads if head_dim is None else head_dim
        message = HeadSplitMessage(dim, heads) if value == "identity" else ValueMessage(dim, heads, head_dim)
        agg = heads * message.value_dim
        self.attn = GraphAttention(dim, agg if not out_proj else dim, heads, head_dim,
                                   score=KernelScore(dim, dim, heads, head_dim, bias=qk_bias),
                                   normalizer=KernelNormalizer(eps), message=message,
                                   update="project" if out_proj else "none")
        self.dim, self.heads, self.head_dim, self.eps, self.impl = dim, heads, head_dim, eps, impl

    def forward(self, x: Tensor, batch: Tensor | None = None, impl: str | None = None) -> Tensor:
        impl = self.impl if impl is None else impl
        layer = self.attn
        if x.dim() == 2:                                     # tokens of several graphs, flat
            if impl not in ("star", "sparse"):
                impl = "star"
            if impl == "sparse":
                b = torch.zeros(x.shape[0], dtype=torch.long, device=x.device) if batch is None else batch
                same = b[:, None] == b[None, :]
                dst, src = same.nonzero(as_tuple=True)
                return layer(x, torch.stack([src, dst]))
            q, k = layer.score.project(x, x)
            out = linear_attention_star(q, k, layer.message.project(x), batch, eps=self.eps)
            return layer.update(x, out.flatten(-2))
        if x.dim() != 3:
            raise ValueError(f"x must be (B, N, D) or (N, D), got {tuple(x.shape)}")
        b, n, d = x.shape
        if impl == "dense":
            return layer(x)
        if impl == "sparse":
            idx = torch.arange(b * n, device=x.device).view(b, n)
            dst = idx.unsqueeze(-1).expand(b, n, n).reshape(-1)
            src = idx.unsqueeze(1).expand(b, n, n).reshape(-1)
            return layer(x.reshape(b * n, d), torch.stack([src, dst])).view(b, n, -1)
        q, k = layer.score.project(x, x)                      # (B, N, H, Dh)
        v = layer.message.project(x)                          # (B, N, H, Dv)
        if impl == "star":
            batch_ids = torch.arange(b, device=x.device).repeat_interleave(n)
            out = linear_attention_star(q.reshape(b * n, *q.shape[2:]), k.reshape(b * n, *k.shape[2:]),
                                        v.reshape(b * n, *v.shape[2:]), batch_ids, b, self.eps).view(b, n, *v.shape[2:])
        else:
            fq, fk = elu_feature_map(q), elu_feature_map(k)
            state = torch.einsum("bnhd,bnhe->bhde", fk, v) / n            # (B, H, Dh, Dv)
            norm = fk.mean(1)                                              # (B, H, Dh)
            out = torch.einsum("bnhd,bhde->bnhe", fq, state) / (
                torch.einsum("bnhd,bhd->bnh", fq, norm).unsqueeze(-1) + self.eps)
        return layer.update(x, out.flatten(-2))
