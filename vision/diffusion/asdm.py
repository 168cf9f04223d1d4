"""A-SDM's global-regional interactive (GRI) attention, as a configurable primitive.

Zhu et al., "A-SDM: Accelerating Stable Diffusion through Redundancy Removal and Performance Optimization"
(https://arxiv.org/abs/2312.15516). **Source status**: no code exists and only the abstract could be read; the
abstract confirms that GRI attention replaces the expensive self-attention. Everything about *how* GRI is
built here is a reconstruction from the design space in ``shared/papers/a-sdm.md`` (to be checked against
Sections 3-4 of the v3 PDF), as are its defaults:

* regional branch: tokens attend within non-overlapping ``r x r`` regions of the token grid;
* global branch: one summary per ``p x p`` block (the mean of its token features, a fixed aggregation
  message pass), every query attends to all ``(h / p)(w / p)`` summaries;
* interaction ``"union"`` (default): one softmax over the union {own region's tokens} U {all summaries}
  (a two-level graph); ``"sum"``: a softmax per branch, branch outputs summed per head.

A token of the query's own region is also summarised in a global node; both edges are kept (counted twice,
as the spec allows - documented, not corrected). The students of the tiny UNet (GRI in place of its
self-attention; pruned ResBlocks replaced by a CondConv with inherited experts; noise + feature distillation)
are in ``vision/diffusion/asdm_unet.py``. Not implemented (reconstructions of the abstract too, out of this CPU
scope): progressive incubation, semantic-aware supervision.

Both interactions are a :class:`GraphAttention` (dot score, softmax, value message, projection update) on a
graph whose senders are the tokens plus the summaries. The fast path runs it window by window (queries of a
region against its ``r^2`` tokens and the summaries: ``N (r^2 + N / p^2)`` scores instead of ``N^2``); with an
attention hook registered or ``return_attention=True`` the layer runs the dense path with the union mask
(:meth:`GRIAttention.union_mask`), so :mod:`graphattn.interpret` tools see and edit the weights as
``(B, H, N, N + G)``.

Args:
    dim: token width. heads: H. grid: (h, w) token grid (row-major tokens). region: r. pool: p.
    mode: ``"union"`` | ``"sum"``.

Shapes: x (B, h * w, dim) -> (B, h * w, dim).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from graphattn.attention import GraphAttention

__all__ = ["GRIAttention", "MODES", "pool_tokens"]

MODES = ("union", "sum")


def pool_tokens(x: Tensor, grid: tuple[int, int], p: int) -> Tensor:
    """Mean of every ``p x p`` block of a row-major token grid: (B, h w, D) -> (B, (h / p)(w / p), D)."""
    b, _, d = x.shape
    h, w = grid
    img = x.transpose(1, 2).reshape(b, d, h, w)
    return F.avg_pool2d(img, p).flatten(2).transpose(1, 2)


def _windows(t: Tensor, grid: tuple[int, int], r: int) -> Tensor:
    """(B, H, h w, C) -> (B, H, R, r^2, C), regions row-major, tokens row-major inside a region."""
    b, hd, _, c = t.shape
    h, w = grid
    t = t.reshape(b, hd, h // r, r, w // r, r, c).permute(0, 1, 2, 4, 3, 5, 6)
    return t.reshape(b, hd, (h // r) * (w // r), r * r, c)


def _unwindow(t: Tensor, grid: tuple[int, int], r: int) -> Tensor:
    """Inverse of :func:`_windows`: (B, H, R, r^2, C) -> (B, H, h w, C)."""
    b, hd, _, _, c = t.shape
    h, w = grid
    t = t.reshape(b, hd, h // r, w // r, r, r, c).permute(0, 1, 2, 4, 3, 5, 6)
    return t.reshape(b, hd, h * w, c)


class GRIAttention(nn.Module):
    __doc__ = __doc__

    def __init__(self, dim: int, heads: int, grid: tuple[int, int], region: int = 4, pool: int = 4,
                 mode: str = "union"):
        super().__init__()
        h, w = grid
        if mode not in MODES:
            raise ValueError(f"GRIAttention: unknown mode {mode!r}; expected one of {', '.join(MODES)}")
        for name, v in (("region", region), ("pool", pool)):
            if v < 1 or h % v or w % v:
                raise ValueError(f"GRIAttention: {name} {v} must divide the grid {h} x {w}")
        self.grid, self.region, self.pool, self.mode = (h, w), region, pool, mode
        self.attn = GraphAttention(dim, heads=heads)

    def reset_parameters(self) -> None:
        self.attn.reset_parameters()

    @property
    def num_tokens(self) -> int:
        return self.grid[0] * self.grid[1]

    @property
    def num_summaries(self) -> int:
        return (self.grid[0] // self.pool) * (self.grid[1] // self.pool)

    def region_of(self) -> Tensor:
        """Region index of every token (N,)."""
        h, w = self.grid
        rows, cols = torch.arange(h)[:, None].expand(h, w), torch.arange(w)[None, :].expand(h, w)
        return ((rows // self.region) * (w // self.region) + cols // self.region).reshape(-1)

    def union_mask(self) -> Tensor:
        """The union graph as a dense mask (N, N + G): own-region tokens, then every summary."""
        reg = self.region_of()
        local = reg[:, None] == reg[None, :]
        return torch.cat([local, torch.ones(self.num_tokens, self.num_summaries, dtype=torch.bool)], 1)

    def forward(self, x: Tensor, return_attention: bool = False):
        if x.dim() != 3 or x.shape[1] != self.num_tokens:
            raise ValueError(f"GRIAttention: expected x (B, {self.num_tokens}, D) for grid {self.grid}, got {tuple(x.shape)}")
        g = pool_tokens(x, self.grid, self.pool)                                  # (B, G, D)
        if self.mode == "union" and (return_attention or self.attn.has_hooks):
            return self.attn(x, x_src=torch.cat([x, g], 1), mask=self.union_mask(), return_attention=return_attention)
        if return_attention:
            raise ValueError("GRIAttention: return_attention is only available with mode='union' (one softmax)")
        att = self.attn
        if att.has_hooks:
            raise ValueError("GRIAttention: mode='sum' has two softmaxes and no single weights tensor for "
                             "attention hooks; use mode='union' to read or edit GRI weights")
        q, k = att.score.project(x, x)                                           # (B, N, H, Dh)
        _, kg = att.score.project(g, g)                                          # (B, G, H, Dh)
        v, vg = att.message.project(x), att.message.project(g)                   # (B, N, H, Dv), (B, G, H, Dv)
        r, grid = self.region, self.grid
        qw = _windows(q.transpose(1, 2), grid, r)                                # (B, H, R, r^2, Dh)
        kw = _windows(k.transpose(1, 2), grid, r)
        vw = _windows(v.transpose(1, 2), grid, r)
        regions = qw.shape[2]
        kg = kg.transpose(1, 2)[:, :, None].expand(-1, -1, regions, -1, -1)      # (B, H, R, G, Dh)
        vg = vg.transpose(1, 2)[:, :, None].expand(-1, -1, regions, -1, -1)
        b, hd = qw.shape[:2]
        flat = lambda t: t.reshape(b, hd * regions, *t.shape[3:])   # noqa: E731  (4-d: SDPA's fused CPU kernel)
        sdpa = lambda q_, k_, v_: F.scaled_dot_product_attention(flat(q_), flat(k_), flat(v_),  # noqa: E731
                                                                 scale=att.score.scale)
        if self.mode == "union":
            out = sdpa(qw, torch.cat([kw, kg], 3), torch.cat([vw, vg], 3))
        else:
            out = sdpa(qw, kw, vw) + sdpa(qw, kg, vg)
        agg = _unwindow(out.reshape(qw.shape[:4] + out.shape[-1:]), grid, r)     # (B, H, N, Dv)
        return att.update(x, agg.transpose(1, 2).flatten(-2))
