"""INFNet's token-flow graph: one small typed graph per impression, a batch is their disjoint union.

Node types (per impression): ``cat`` (M categorical-field tokens), ``cat_proxy`` (m), ``seq`` (L behaviour
tokens; padded positions are nodes without edges), ``seq_proxy`` (F, one per behaviour type), ``task``
(N_task real task tokens) and ``task_shared`` (N_s shared task proxies). Node ``i`` of impression ``b`` of a
type with ``n`` nodes per impression has global index ``b * n + i``, so ``x.reshape(B * n, d)`` of the dense
``(B, n, d)`` tokens lines up with the graph.

Edge types:

- heterogeneous flow (:data:`HETERO_EDGES`, 8 complete bipartite relations, each with its own attention):
  seq->cat_proxy, task->cat_proxy, cat->seq_proxy, task->seq_proxy, cat->task_shared, seq->task_shared,
  cat->task, seq->task. Edges leave only valid (unpadded) sequence positions.
- homogeneous flow (:data:`HOMO_EDGES`): cat_proxy->cat, seq_proxy->seq, task_shared->task. The gate of a
  token reads *all* proxies of its type concatenated by slot, so these edges carry the proxy's ``slot``
  (edge attribute) and every proxy node stores its ``slot``; flattening in slot order keeps the gate
  well defined.

Without task tokens (the ablation) the ``task`` nodes and every edge touching them are left out.
"""
from __future__ import annotations

import torch
from torch import Tensor
from torch_geometric.data import HeteroData

from graphattn.ops import mask_to_edge_index

__all__ = ["NODE_TYPES", "HETERO_EDGES", "HOMO_EDGES", "PROXY_OF", "token_flow_graph"]

NODE_TYPES = ("cat", "cat_proxy", "seq", "seq_proxy", "task", "task_shared")
HETERO_EDGES = (("seq", "cat_proxy"), ("task", "cat_proxy"), ("cat", "seq_proxy"), ("task", "seq_proxy"),
                ("cat", "task_shared"), ("seq", "task_shared"), ("cat", "task"), ("seq", "task"))
HOMO_EDGES = (("cat_proxy", "cat"), ("seq_proxy", "seq"), ("task_shared", "task"))
PROXY_OF = {"cat": "cat_proxy", "seq": "seq_proxy", "task": "task_shared"}


def _relation(src: str, dst: str) -> tuple[str, str, str]:
    return (src, "to", dst)


def token_flow_graph(seq_mask: Tensor, num_cat: int, num_cat_proxy: int, num_seq_proxy: int, num_task: int,
                     num_task_shared: int, use_task_tokens: bool = True) -> HeteroData:
    """Build the batch's token-flow graph.

    Args:
        seq_mask: ``(B, L)`` bool, True at real (unpadded) sequence positions.
        num_cat, num_cat_proxy, num_seq_proxy, num_task, num_task_shared: tokens per impression.
        use_task_tokens: include the ``task`` nodes (False: the "no task tokens" ablation).

    Returns:
        ``HeteroData`` with, per node type, ``num_nodes``, ``batch`` (impression of each node) and ``slot``
        (position within the impression); ``data["seq"].valid``; per relation ``(src, "to", dst)`` an
        ``edge_index`` (row 0 source, row 1 destination, global indices) and, for the homogeneous
        relations, ``slot`` (the source proxy's slot).
    """
    if seq_mask.dim() != 2 or seq_mask.dtype != torch.bool:
        raise ValueError(f"seq_mask must be a (B, L) bool tensor, got {tuple(seq_mask.shape)} {seq_mask.dtype}")
    b, length = seq_mask.shape
    device = seq_mask.device
    counts = {"cat": num_cat, "cat_proxy": num_cat_proxy, "seq": length, "seq_proxy": num_seq_proxy,
              "task": num_task if use_task_tokens else 0, "task_shared": num_task_shared}
    valid = {t: torch.ones(b, n, dtype=torch.bool, device=device) for t, n in counts.items()}
    valid["seq"] = seq_mask
    data = HeteroData()
    for t, n in counts.items():
        if n == 0:
            continue
        data[t].num_nodes = b * n
        data[t].batch = torch.arange(b, device=device).repeat_interleave(n)
        data[t].slot = torch.arange(n, device=device).repeat(b)
    data["seq"].valid = seq_mask.reshape(-1)
    for src, dst in (*HETERO_EDGES, *HOMO_EDGES):
        if counts[src] == 0 or counts[dst] == 0:
            continue
        # (B, n_dst, n_src): impression b's destination i receives from every valid source j
        mask = valid[src][:, None, :].expand(b, counts[dst], counts[src])
        edge_index = mask_to_edge_index(mask)
        rel = data[_relation(src, dst)]
        rel.edge_index = edge_index
        if (src, dst) in HOMO_EDGES:
            rel.slot = edge_index[0] % counts[src]
    return data
