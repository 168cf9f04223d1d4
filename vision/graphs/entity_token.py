"""Entity-token graph: ISTA-Net's Interactive Spatiotemporal Tokens and the graph they attend over.

Wen et al., "Interactive Spatiotemporal Token Attention Network for Skeleton-based General Interactive
Action Recognition", IROS 2023, https://arxiv.org/abs/2307.07469 (tokenizer ``window_partition`` of the
official code, https://github.com/Necolizer/ISTA-Net).

A skeleton clip ``x`` of shape ``(N, C, T, J, E)`` (C coordinates, T frames, J joints, E entities) is cut
with a window ``(Tw, Jw, Ew)``. T, J, E are first replicate-padded up to multiples of the window
(``T' = ceil(T / Tw) * Tw`` etc.). The axes then split as ``T' = Tw x nT``, ``J' = Jw x nJ``,
``E' = Ew x nE`` with the WINDOW index outer and the COUNT index inner, so

* token ``u = (a, b, c)`` (row-major over ``(nT, nJ, nE)``: phase-major, joint-group, entity-group minor)
* holds, at within-token time ``i`` and within-token position ``p = (jw, ew)`` (row-major over ``(Jw, Ew)``),
  frame ``i * nT + a``, joint ``jw * nJ + b`` and entity ``ew * nE + c``.

A token therefore takes ``Tw`` frames with STRIDE ``nT`` (not a contiguous clip), as the official reshape
does. With the NTU window ``(20, 1, 2)`` and ``T = 120, J = 25, E = 2`` there are ``6 x 25 = 150`` tokens and
token ``(phase a, joint j)`` holds joint ``j`` of both persons at frames ``a, a + 6, ..., a + 114``.

Graph (one clip): node type ``token`` (U nodes; feature = the whole ``C x Tw x (Jw * Ew)`` block, so the
entity axis lives inside the node); edge type 0 ``attends`` = the complete directed graph with self-loops
(content attention + learned static adjacency); edge types ``1 .. 2r + 1`` ``token-conv offset o`` for
``o = -r .. r``: token ``u + o -> u``, the taps of the convolution along the token axis (kernel
``k_u = 2r + 1``, one weight matrix per offset; it depends on the token order, which is why the order is
fixed).

Letters: N batch, C channels, T frames, J joints, E entities, Tw/Jw/Ew window, nT/nJ/nE counts,
U = nT * nJ * nE tokens, P = Jw * Ew positions inside a token.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.data import Data

from graphattn.ops import complete_mask, mask_to_edge_index

__all__ = ["TokenLayout", "token_layout", "tokenize", "untokenize", "entity_token_graph"]


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True)
class TokenLayout:
    """Where every entry of every token comes from.

    Attributes:
        shape: the unpadded ``(T, J, E)``.
        window: ``(Tw, Jw, Ew)``.
        counts: ``(nT, nJ, nE)``; ``num_tokens = nT * nJ * nE``.
        padded: ``(T', J', E') = (Tw * nT, Jw * nJ, Ew * nE)``.
    """

    shape: tuple[int, int, int]
    window: tuple[int, int, int]
    counts: tuple[int, int, int]

    @property
    def padded(self) -> tuple[int, int, int]:
        return tuple(w * n for w, n in zip(self.window, self.counts))

    @property
    def num_tokens(self) -> int:
        n_t, n_j, n_e = self.counts
        return n_t * n_j * n_e

    @property
    def positions(self) -> int:
        return self.window[1] * self.window[2]

    def token_coords(self) -> Tensor:
        """``(U, 3)`` long: ``(phase a, joint group b, entity group c)`` of every token, in token order."""
        n_t, n_j, n_e = self.counts
        grid = torch.meshgrid(torch.arange(n_t), torch.arange(n_j), torch.arange(n_e), indexing="ij")
        return torch.stack([g.reshape(-1) for g in grid], dim=1)

    def source_index(self) -> tuple[Tensor, Tensor, Tensor]:
        """Original (unpadded, replicate-clamped) indices of every token entry.

        Returns ``frame (U, Tw)``, ``joint (U, P)`` and ``entity (U, P)``: token ``u`` at within-token time
        ``i`` and position ``p`` holds ``x[..., frame[u, i], joint[u, p], entity[u, p]]``.
        """
        (tw, jw, ew), (n_t, n_j, n_e) = self.window, self.counts
        t, j, e = self.shape
        a, b, c = self.token_coords().unbind(1)                             # (U,) each
        frame = torch.arange(tw)[None, :] * n_t + a[:, None]                # (U, Tw)
        jpos = torch.arange(jw).repeat_interleave(ew)                        # (P,) row-major (jw, ew)
        epos = torch.arange(ew).repeat(jw)
        joint = jpos[None, :] * n_j + b[:, None]                             # (U, P)
        entity = epos[None, :] * n_e + c[:, None]
        # replicate padding = clamp to the last real index
        return frame.clamp_max(t - 1), joint.clamp_max(j - 1), entity.clamp_max(e - 1)


def token_layout(shape: Sequence[int], window: Sequence[int]) -> TokenLayout:
    """The layout of ``(T, J, E)`` under ``window = (Tw, Jw, Ew)``; errors name the bad entry."""
    shape, window = tuple(int(s) for s in shape), tuple(int(w) for w in window)
    if len(shape) != 3 or len(window) != 3:
        raise ValueError(f"shape and window must have 3 entries (T, J, E) / (Tw, Jw, Ew), got {shape} and {window}")
    for name, s, w in zip(("T", "J", "E"), shape, window):
        if s < 1 or w < 1:
            raise ValueError(f"{name} and its window must be >= 1, got {name}={s}, window={w}")
    counts = tuple(_ceil_div(s, w) for s, w in zip(shape, window))
    return TokenLayout(shape, window, counts)


def tokenize(x: Tensor, window: Sequence[int]) -> Tensor:
    """Cut ``x (N, C, T, J, E)`` into Interactive Spatiotemporal Tokens ``(N, C, Tw, Jw * Ew, U)``.

    Replicate padding, then the official reshape (window index outer, count index inner), so token
    ``u = (a, b, c)`` holds frames ``a, a + nT, ...`` (strided), see the module docstring.
    """
    if x.dim() != 5:
        raise ValueError(f"expected x of shape (N, C, T, J, E), got {tuple(x.shape)}")
    n, c = x.shape[:2]
    layout = token_layout(x.shape[2:], window)
    (tw, jw, ew), (n_t, n_j, n_e) = layout.window, layout.counts
    pad = [p - s for p, s in zip(layout.padded, x.shape[2:])]
    if any(pad):
        # F.pad counts from the last axis; 'replicate' on a 5-D input pads the last three axes
        x = F.pad(x, (0, pad[2], 0, pad[1], 0, pad[0]), mode="replicate")
    x = x.reshape(n, c, tw, n_t, jw, n_j, ew, n_e)
    x = x.permute(0, 1, 2, 4, 6, 3, 5, 7)                                    # (N, C, Tw, Jw, Ew, nT, nJ, nE)
    return x.reshape(n, c, tw, jw * ew, n_t * n_j * n_e)


def untokenize(tokens: Tensor, shape: Sequence[int], window: Sequence[int]) -> Tensor:
    """Inverse of :func:`tokenize`: ``(N, C, Tw, Jw * Ew, U)`` -> ``(N, C, T, J, E)`` (padding dropped)."""
    layout = token_layout(shape, window)
    (tw, jw, ew), (n_t, n_j, n_e) = layout.window, layout.counts
    n, c = tokens.shape[:2]
    expected = (tw, jw * ew, layout.num_tokens)
    if tuple(tokens.shape[2:]) != expected:
        raise ValueError(f"tokens must have shape (N, C, {tw}, {jw * ew}, {layout.num_tokens}) for shape {tuple(shape)} "
                         f"and window {tuple(window)}, got {tuple(tokens.shape)}")
    x = tokens.reshape(n, c, tw, jw, ew, n_t, n_j, n_e).permute(0, 1, 2, 5, 3, 6, 4, 7)
    t, j, e = layout.shape
    return x.reshape(n, c, *layout.padded)[:, :, :t, :j, :e]


def entity_token_graph(shape: Sequence[int], window: Sequence[int], conv_radius: int = 2) -> Data:
    """The entity-token graph of one clip (see the module docstring).

    Args:
        shape: ``(T, J, E)``.
        window: ``(Tw, Jw, Ew)``.
        conv_radius: r, half the kernel of the convolution along the token axis (ISTA-Net: ``k_u = 5``,
            r = 2); 0 gives only the attention edges.

    Returns:
        ``Data`` with ``edge_index (2, U*U + conv edges)`` ``[src; dst]``, ``edge_type`` (0 attends,
        ``1 .. 2r + 1`` the conv offsets ``-r .. r`` in that order), ``edge_offset`` (0 for attention
        edges, the offset ``o`` with ``src = dst + o`` for conv edges), node attributes ``phase``,
        ``joint_group``, ``entity_group`` (each ``(U,)``), ``frame_index (U, Tw)``, ``joint_index (U, P)``,
        ``entity_index (U, P)``, and ``num_nodes = U``.
    """
    layout = token_layout(shape, window)
    u = layout.num_tokens
    attend = mask_to_edge_index(complete_mask(u))                             # (2, U*U)
    edges, types, offsets = [attend], [torch.zeros(attend.shape[1], dtype=torch.long)], [torch.zeros(attend.shape[1], dtype=torch.long)]
    conv_offsets = list(range(-conv_radius, conv_radius + 1)) if conv_radius > 0 else []
    for t, o in enumerate(conv_offsets, start=1):
        dst = torch.arange(u)
        src = dst + o
        keep = (src >= 0) & (src < u)                                          # zero padding at the ends
        edges.append(torch.stack([src[keep], dst[keep]]))
        types.append(torch.full((int(keep.sum()),), t, dtype=torch.long))
        offsets.append(torch.full((int(keep.sum()),), o, dtype=torch.long))
    coords = layout.token_coords()
    frame, joint, entity = layout.source_index()
    return Data(edge_index=torch.cat(edges, 1), edge_type=torch.cat(types), edge_offset=torch.cat(offsets),
                num_nodes=u, phase=coords[:, 0], joint_group=coords[:, 1], entity_group=coords[:, 2],
                frame_index=frame, joint_index=joint, entity_index=entity,
                window=layout.window, counts=layout.counts)
