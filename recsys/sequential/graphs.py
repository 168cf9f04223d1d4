"""The context/target-set graph of a neural process over time frames (IDNP's deterministic path).

Per user there are ``T`` frame nodes (one per time frame, with a time) and ``Q`` query nodes (target time
steps). A frame sends to a query when the frame is in the user's context set and ends before the query:

    frame t -> query q   iff   valid[t] and t < n_context and end[t] < query_pos[q]

With every frame in the context and queries after all of them this is the complete bipartite graph
context -> target; during training the positional condition keeps a target from seeing its own frame or
later ones. Batching is the disjoint union of the users' graphs.

Two views of the same edges: :func:`context_target_mask` (dense ``(B, Q, T)`` mask for the dense attention
path) and :func:`context_target_graph` (a PyG ``HeteroData`` with node types ``frame`` and ``query``, edge
type ``("frame", "informs", "query")`` with flattened ``edge_index``, plus ``("frame", "summarises",
"latent")`` edges of the context set (mean aggregation in the latent path)).
"""
from __future__ import annotations

import torch
from torch import Tensor
from torch_geometric.data import HeteroData

from graphattn.ops import mask_to_edge_index

__all__ = ["context_target_mask", "context_target_graph"]


def context_target_mask(frame_valid: Tensor, frame_end: Tensor, query_pos: Tensor, n_context: Tensor | None = None,
                        query_valid: Tensor | None = None) -> Tensor:
    """``(B, Q, T)`` boolean: query ``q`` of user ``b`` may attend frame ``t``.

    Args:
        frame_valid: ``(B, T)`` frames that exist.
        frame_end: ``(B, T)`` sequence position of each frame's last item.
        query_pos: ``(B, Q)`` sequence position of each query (the item to predict); a frame is visible
            only when it ends strictly before it.
        n_context: ``(B,)`` the first ``n_context[b]`` frame slots form the context set (default: all).
        query_valid: ``(B, Q)`` queries that exist (rows of missing queries are all False).
    """
    if frame_valid.shape != frame_end.shape or frame_valid.dim() != 2:
        raise ValueError(f"frame_valid and frame_end must both be (B, T), got {tuple(frame_valid.shape)} "
                         f"and {tuple(frame_end.shape)}")
    if query_pos.dim() != 2 or query_pos.shape[0] != frame_valid.shape[0]:
        raise ValueError(f"query_pos must be (B, Q) with B={frame_valid.shape[0]}, got {tuple(query_pos.shape)}")
    in_context = frame_valid
    if n_context is not None:
        slot = torch.arange(frame_valid.shape[1], device=frame_valid.device)
        in_context = in_context & (slot[None, :] < n_context[:, None])
    mask = in_context[:, None, :] & (frame_end[:, None, :] < query_pos[:, :, None])     # (B, Q, T)
    if query_valid is not None:
        mask = mask & query_valid[:, :, None]
    return mask


def context_target_graph(frame_time: Tensor, mask: Tensor, query_time: Tensor,
                         context: Tensor | None = None) -> HeteroData:
    """The typed graph of a batch from its dense mask (disjoint union over users).

    Node ``b * T + t`` is frame ``t`` of user ``b``, node ``b * Q + q`` query ``q``; latent node ``b`` is user
    ``b``'s global latent variable.

    Args:
        frame_time: ``(B, T)`` frame times; mask: ``(B, Q, T)`` from :func:`context_target_mask`;
        query_time: ``(B, Q)``; context: ``(B, T)`` frames summarised by the latent path (default: frames
            that send to at least one query).
    """
    bsz, n_q, n_t = mask.shape
    data = HeteroData()
    data["frame"].time = frame_time.reshape(-1)
    data["frame"].batch = torch.arange(bsz, device=mask.device).repeat_interleave(n_t)
    data["query"].time = query_time.reshape(-1)
    data["query"].batch = torch.arange(bsz, device=mask.device).repeat_interleave(n_q)
    data["latent"].num_nodes = bsz
    data["frame", "informs", "query"].edge_index = mask_to_edge_index(mask)
    if context is None:
        context = mask.any(1)
    b, t = context.nonzero(as_tuple=True)
    data["frame", "summarises", "latent"].edge_index = torch.stack([b * n_t + t, b])
    return data
