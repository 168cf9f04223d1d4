"""Generalized Neighborhood Attention on 1-D/2-D/3-D token grids, with four equal implementations.

Letters in shape comments: B batch, N tokens (row-major grid), H heads, Dh/Dv head widths, K keys per
window (``prod(kernel_size)``), G query groups (stride groups), S queries per group (``prod(stride)``).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..ops import mask_to_edge_index, neighborhood_indices, neighborhood_mask
from .layer import GraphAttention

__all__ = ["NeighborhoodAttention", "neighborhood_groups"]

_IMPLS = ("auto", "sparse", "masked", "gather", "block")


def _tuple(value, nd: int, name: str) -> tuple:
    if isinstance(value, (int, bool)):
        return (value,) * nd
    value = tuple(value)
    if len(value) != nd:
        raise ValueError(f"{name} must be a scalar or have one entry per grid axis ({nd}), got {value}")
    return value


def _axis_groups(length: int, k: int, s: int, d: int, causal: bool) -> tuple[Tensor, Tensor, Tensor]:
    """Stride groups of one axis: the queries of each group share one window of keys.

    Follows the GNA rules of :func:`graphattn.ops.neighborhood_mask` (dilation groups, stride leaders,
    windows shifted inward at borders; causal windows end at the leader and are cut at each query).

    Returns ``q (G, s)`` and ``kv (G, k)`` positions (``-1`` = padding) and ``mask (G, s, k)``: True where
    the query may attend the key (always all-True on real entries for non-causal windows).
    """
    qs, kvs, masks = [], [], []
    left, right = k // 2, k // 2 + k % 2 - 1
    for r in range(d):
        glen = (length - r + d - 1) // d                    # length of this dilation group
        for t in range(0, glen, s):
            members = list(range(t, min(t + s, glen)))
            if causal:
                leader = min(t + s - 1, glen - 1)
                keys = list(range(max(0, leader - k + 1), leader + 1))
            else:
                leader = min(t + s // 2, glen - 1)
                centre = max(min(leader, glen - 1 - right), left)
                keys = list(range(centre - left, centre + right + 1))
            q = torch.full((s,), -1, dtype=torch.long)
            kv = torch.full((k,), -1, dtype=torch.long)
            q[:len(members)] = torch.tensor(members) * d + r
            kv[:len(keys)] = torch.tensor(keys) * d + r
            m = torch.zeros(s, k, dtype=torch.bool)
            for a, i in enumerate(members):
                for b, j in enumerate(keys):
                    m[a, b] = (j <= i) if causal else True
            qs.append(q)
            kvs.append(kv)
            masks.append(m)
    return torch.stack(qs), torch.stack(kvs), torch.stack(masks)


def neighborhood_groups(shape: int | Sequence[int], kernel_size, stride=1, dilation=1,
                        causal=False) -> tuple[Tensor, Tensor, Tensor | None]:
    """Query groups that share one key window (the block-sparse form of GNA).

    Multi-D groups are Cartesian products of the per-axis groups. Returns ``q_index (G, S)`` and
    ``kv_index (G, K)`` (flat row-major token ids, ``-1`` = padding) and ``mask (G, S, K)`` (True = query
    attends key, False on padding), or ``mask=None`` when every entry is True (no masking needed: the
    pattern is perfectly block-sparse).
    """
    shape = (shape,) if isinstance(shape, int) else tuple(int(v) for v in shape)
    nd = len(shape)
    ks, ss, ds, cs = (_tuple(v, nd, n) for v, n in ((kernel_size, "kernel_size"), (stride, "stride"),
                                                     (dilation, "dilation"), (causal, "causal")))
    q = kv = None
    mask = None
    for length, k, s, d, c in zip(shape, ks, ss, ds, cs):
        qa, kva, ma = _axis_groups(length, k, s, d, bool(c))
        ma = ma & (qa[:, :, None] >= 0) & (kva[:, None, :] >= 0)
        if q is None:
            q, kv, mask = qa, kva, ma
            continue
        g0, g1 = q.shape[0], qa.shape[0]

        def combine(a: Tensor, b: Tensor) -> Tensor:
            # (G0, A), (G1, Bb) -> (G0 * G1, A * Bb) row-major flat ids, -1 where either side pads
            flat = a[:, None, :, None] * length + b[None, :, None, :]
            flat = torch.where((a[:, None, :, None] >= 0) & (b[None, :, None, :] >= 0), flat, -1)
            return flat.reshape(g0 * g1, -1)

        q, kv = combine(q, qa), combine(kv, kva)
        # (G0, S0, K0) x (G1, S1, K1) -> (G0, G1, S0, S1, K0, K1)
        mask = (mask[:, None, :, None, :, None] & ma[None, :, None, :, None, :]).reshape(q.shape[0], q.shape[1], -1)
    full = bool(mask.all())
    return q, kv, (None if full else mask)


class NeighborhoodAttention(nn.Module):
    r"""Generalized Neighborhood Attention (GNA) as message passing on a grid graph.

    Hassani et al., "Generalized Neighborhood Attention: Multi-dimensional Sparse Attention at the Speed of
    Light", 2025, https://arxiv.org/abs/2504.16922 (rules of NATTEN's Flex mask; see
    ``shared/papers/gna.md``).

    .. math::
        y_i = W_o \big\Vert_h \sum_{j \in \mathcal{N}(i)}
              \mathrm{softmax}_{j \in \mathcal{N}(i)}\!\big(q^h_i \cdot k^h_j / \sqrt{D_h}\big)\, v^h_j

    where :math:`\mathcal{N}(i)` is the GNA neighbourhood of query ``i`` (kernel size, stride, dilation,
    causality per axis; :func:`graphattn.ops.neighborhood_mask`). The projections, softmax and output
    projection are those of a :class:`GraphAttention` layer (score ``"dot"``, normaliser ``"dst_softmax"``,
    update ``"project"``), held as ``self.attn``; ``impl`` only chooses how the same function is computed:

    * ``"sparse"``: the grid graph's edge list through the layer's sparse path (edge softmax + scatter).
    * ``"masked"``: the layer's dense path, SDPA with the boolean ``(N, N)`` mask; O(N^2).
    * ``"gather"``: each query gathers its ``K = prod(kernel_size)`` keys
      (:func:`graphattn.ops.neighborhood_indices`); O(N K).
    * ``"block"``: queries of one stride group share one window, so each group gathers its window once and
      runs SDPA on ``(S queries) x (K keys)``; O(N K) score FLOPs with ``N / S`` gathers. When
      ``stride == kernel_size``, ``dilation == 1`` and each axis is a multiple of the kernel, the groups are
      Swin-style tiles obtained by a reshape (no gather, no mask).
    * ``"auto"``: ``"block"`` when stride groups hold at least 16 queries (or the pattern is tiled) and the
      window covers at most a quarter of the grid, else ``"masked"`` (a CPU rule from ``bench/gna.py``).

    Calls that need the weights (``return_attention=True`` or attention hooks on ``self.attn``) always take
    the layer's dense masked path, which returns ``(B, H, N, N)`` weights and runs the hooks.

    Args:
        dim: token width D (input and output).
        heads: number of heads H.
        shape: grid shape (1 to 3 axes), tokens flattened row-major.
        kernel_size, stride, dilation, causal: GNA parameters, an int/bool or one per axis.
        impl: ``"auto" | "sparse" | "masked" | "gather" | "block"``.
        head_dim: per-head width (default ``dim // heads``).
        dropout: attention dropout.
        bias: bias of the projections.

    Shapes:
        x (B, N, D) or (B, *shape, D) -> same shape.
    """

    def __init__(self, dim: int, heads: int, shape: int | Sequence[int], kernel_size: int | Sequence[int],
                 stride: int | Sequence[int] = 1, dilation: int | Sequence[int] = 1,
                 causal: bool | Sequence[bool] = False, impl: str = "auto", head_dim: int | None = None,
                 dropout: float = 0.0, bias: bool = True):
        super().__init__()
        if impl not in _IMPLS:
            raise ValueError(f"impl must be one of {_IMPLS}, got {impl!r}")
        self.shape = (shape,) if isinstance(shape, int) else tuple(int(v) for v in shape)
        nd = len(self.shape)
        self.kernel_size = tuple(int(v) for v in _tuple(kernel_size, nd, "kernel_size"))
        self.stride = tuple(int(v) for v in _tuple(stride, nd, "stride"))
        self.dilation = tuple(int(v) for v in _tuple(dilation, nd, "dilation"))
        self.causal = tuple(bool(v) for v in _tuple(causal, nd, "causal"))
        self.num_tokens = math.prod(self.shape)
        self.window = math.prod(self.kernel_size)
        for axis, (length, k, s, d) in enumerate(zip(self.shape, self.kernel_size, self.stride, self.dilation)):
            if not (k >= 1 and 1 <= s <= k and d >= 1 and k * d <= length):
                raise ValueError(f"axis {axis}: need kernel_size >= 1, 1 <= stride <= kernel_size, dilation >= 1 and "
                                 f"kernel_size * dilation <= length; got k={k}, s={s}, d={d}, length={length}")
        self.impl = impl
        self.attn = GraphAttention(dim, dim, heads, head_dim, score="dot", normalizer="dst_softmax",
                                   message="value", update="project", dropout=dropout, bias=bias)
        self.heads = heads
        self._cache: dict[str, object] = {}

    def extra_repr(self) -> str:
        return (f"shape={self.shape}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"dilation={self.dilation}, causal={self.causal}, impl={self.impl!r}")

    # ------------------------------------------------------------------------------------------ structure

    def _params(self):
        return self.shape, self.kernel_size, self.stride, self.dilation, self.causal

    def _get(self, name: str, device: torch.device):
        key = f"{name}:{device}"
        if key not in self._cache:
            if name == "mask":
                value = neighborhood_mask(*self._params())
            elif name == "edge_index":
                value = mask_to_edge_index(self._get("mask", torch.device("cpu")))
            elif name == "indices":
                value = neighborhood_indices(*self._params())
            elif name == "groups":
                value = neighborhood_groups(*self._params())
            elif name == "inverse":
                # position of each token among the G*S group slots (padding slots are skipped)
                flat = self._get("groups", torch.device("cpu"))[0].reshape(-1)
                keep = (flat >= 0).nonzero().squeeze(1)
                value = torch.empty(self.num_tokens, dtype=torch.long)
                value[flat[keep]] = keep
            else:
                raise KeyError(name)
            value = tuple(v.to(device) if v is not None else None for v in value) if isinstance(value, tuple) \
                else value.to(device)
            self._cache[key] = value
        return self._cache[key]

    def is_tiled(self) -> bool:
        """True when stride == kernel, dilation 1, non-causal and every axis is a multiple of the kernel:
        the neighbourhoods are disjoint tiles reachable by a reshape."""
        return all(s == k and d == 1 and not c and length % k == 0
                   for length, k, s, d, c in zip(*self._params()))

    def resolve_impl(self, impl: str | None = None) -> str:
        impl = self.impl if impl is None else impl
        if impl not in _IMPLS:
            raise ValueError(f"impl must be one of {_IMPLS}, got {impl!r}")
        if impl == "auto":
            # CPU measurements (bench/gna.py): the block path wins once groups hold >= 16 queries and the
            # window is well below the grid; otherwise fused masked SDPA is faster than any gather
            small = 4 * self.window <= self.num_tokens
            return "block" if small and (math.prod(self.stride) >= 16 or self.is_tiled()) else "masked"
        return impl

    # ------------------------------------------------------------------------------------------ forward

    def forward(self, x: Tensor, impl: str | None = None, return_attention: bool = False):
        if x.dim() == 2 + len(self.shape) and tuple(x.shape[1:-1]) == self.shape:
            grid_input = True
            b, d = x.shape[0], x.shape[-1]
            x = x.reshape(b, self.num_tokens, d)
        elif x.dim() == 3 and x.shape[1] == self.num_tokens:
            grid_input = False
        else:
            raise ValueError(f"x must be (B, {self.num_tokens}, D) or (B, *{self.shape}, D), got {tuple(x.shape)}")
        impl = self.resolve_impl(impl)
        weights = None
        if return_attention or self.attn.has_hooks:
            out, weights = self.attn(x, mask=self._get("mask", x.device), return_attention=True)
        elif impl == "masked":
            out = self.attn(x, mask=self._get("mask", x.device))
        elif impl == "sparse":
            out = self._sparse(x)
        else:
            q, k = self.attn.score.project(x, x)                        # (B, N, H, Dh)
            v = self.attn.message.project(x)                           # (B, N, H, Dv)
            if impl == "gather":
                agg = self._gather(q, k, v)
            elif self.is_tiled():
                agg = self._tiles(q, k, v)
            else:
                agg = self._block(q, k, v)
            out = self.attn.update(x, agg.flatten(-2))                 # (B, N, D)
        if grid_input:
            out = out.reshape(out.shape[0], *self.shape, out.shape[-1])
        return (out, weights) if return_attention else out   # weights: GraphAttention's AttentionWeights

    def _dropout_p(self) -> float:
        return self.attn.dropout if self.training else 0.0

    def _sparse(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        ei = self._get("edge_index", x.device)
        offsets = torch.arange(b, device=x.device).repeat_interleave(ei.shape[1]) * n
        batched = ei.repeat(1, b) + offsets
        return self.attn(x.reshape(b * n, d), batched).reshape(b, n, -1)

    def _gather(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        index, valid = self._get("indices", q.device)                  # (N, K)
        qh, kh, vh = (t.transpose(1, 2) for t in (q, k, v))             # (B, H, N, D)
        # batched (1 x K) products as einsums: on CPU this beats SDPA over B*N*H length-1 queries
        scores = torch.einsum("bhnd,bhnkd->bhnk", qh, kh[:, :, index]) * self.attn.score.scale
        if not bool(valid.all()):
            scores = scores.masked_fill(~valid, float("-inf"))
        weights = torch.softmax(scores, dim=-1)                         # (B, H, N, K)
        if self.training and self.attn.dropout > 0:
            weights = F.dropout(weights, self.attn.dropout)
        return torch.einsum("bhnk,bhnkd->bhnd", weights, vh[:, :, index]).transpose(1, 2)  # (B, N, H, Dv)

    def _block(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        if math.prod(self.stride) == 1:                                # one query per group: the gather path
            return self._gather(q, k, v)
        q_idx, kv_idx, mask = self._get("groups", q.device)            # (G, S), (G, K), (G, S, K) | None
        b, n, h = q.shape[:3]
        qi, ki = q_idx.clamp_min(0), kv_idx.clamp_min(0)
        qg = q[:, qi].permute(0, 1, 3, 2, 4)                           # (B, G, H, S, Dh)
        kg = k[:, ki].permute(0, 1, 3, 2, 4)                           # (B, G, H, K, Dh)
        vg = v[:, ki].permute(0, 1, 3, 2, 4)                           # (B, G, H, K, Dv)
        g = qg.shape[1]
        attn_mask = None
        if mask is not None:
            # padded query rows would see no key: let them see everything (their output is dropped)
            attn_mask = (mask | ~mask.any(-1, keepdim=True))[:, None]  # (G, 1, S, K)
            attn_mask = attn_mask.unsqueeze(0).expand(b, -1, -1, -1, -1).reshape(b * g, 1, *mask.shape[1:])
        # 4-D inputs so that fused SDPA kernels apply: (B*G, H, S|K, D)
        out = F.scaled_dot_product_attention(qg.flatten(0, 1), kg.flatten(0, 1), vg.flatten(0, 1),
                                             attn_mask=attn_mask, scale=self.attn.score.scale,
                                             dropout_p=self._dropout_p())
        out = out.view(b, g, h, -1, out.shape[-1])                      # (B, G, H, S, Dv)
        out = out.permute(0, 1, 3, 2, 4).reshape(b, -1, h, out.shape[-1])  # (B, G*S, H, Dv)
        return out[:, self._get("inverse", q.device)]                  # (B, N, H, Dv)

    def _tiles(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        b, n, h = q.shape[:3]
        nd = len(self.shape)
        split = []
        for length, ksz in zip(self.shape, self.kernel_size):
            split += [length // ksz, ksz]
        # (B, L0/k0, k0, L1/k1, k1, ..., H, D) -> (B, G0, G1, ..., H, k0, k1, ..., D)
        perm = [0] + [1 + 2 * a for a in range(nd)] + [1 + 2 * nd] + [2 + 2 * a for a in range(nd)] + [2 + 2 * nd]

        def to_tiles(t: Tensor) -> Tensor:
            t = t.reshape(b, *split, h, t.shape[-1]).permute(perm)
            g = math.prod(split[0::2])
            return t.reshape(b * g, h, self.window, t.shape[-1])       # (B*G, H, K, D)

        out = F.scaled_dot_product_attention(to_tiles(q), to_tiles(k), to_tiles(v), scale=self.attn.score.scale,
                                             dropout_p=self._dropout_p())
        dv = out.shape[-1]
        out = out.reshape(b, *split[0::2], h, *self.kernel_size, dv)
        inv = [0] * len(perm)
        for i, p in enumerate(perm):
            inv[p] = i
        return out.permute(inv).reshape(b, n, h, dv)
