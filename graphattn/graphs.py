"""Typed-graph builders: one per structure the models attend over.

Each builder returns a PyTorch Geometric ``Data`` whose ``edge_index`` is ``[src; dst]`` (messages flow
from ``src`` to ``dst``) and documents its node and edge types. Builders of model-specific structures
(object graphs, entity-token graphs, token flows, ...) live next to this file's, added with their models.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor
from torch_geometric.data import Data

from .ops import causal_mask, complete_mask, mask_to_edge_index, neighborhood_mask

__all__ = ["complete_graph", "causal_graph", "grid_graph", "sequence_graph", "collaborative_kg",
           "CKG_INTERACT"]

CKG_INTERACT = 0


def complete_graph(n: int, self_loops: bool = True) -> Data:
    """Every token attends to every token. Node type: token; edge type: attends."""
    return Data(edge_index=mask_to_edge_index(complete_mask(n, self_loops=self_loops)), num_nodes=n)


def causal_graph(n: int) -> Data:
    """Token ``i`` receives from tokens ``j <= i`` (autoregressive sequences)."""
    return Data(edge_index=mask_to_edge_index(causal_mask(n)), num_nodes=n)


def grid_graph(shape: int | Sequence[int], kernel_size: int | Sequence[int], stride: int | Sequence[int] = 1,
               dilation: int | Sequence[int] = 1, causal: bool | Sequence[bool] = False) -> Data:
    """Generalized-neighbourhood graph on a 1-D/2-D/3-D grid (tokens flattened row-major).

    Edge ``j -> i`` exists iff key ``j`` is in query ``i``'s window under the GNA rules of
    :func:`graphattn.ops.neighborhood_mask`. ``shape`` is stored on the graph.
    """
    mask = neighborhood_mask(shape, kernel_size, stride, dilation, causal)
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    return Data(edge_index=mask_to_edge_index(mask), num_nodes=mask.shape[0], grid_shape=shape)


def sequence_graph(n: int, kind: str = "complete", window: int | None = None, dilation: int = 1) -> Data:
    """Sequence neighbourhoods: ``complete``, ``causal``, or ``window`` (sliding window of ``window``
    tokens, dilated by ``dilation``; ``window`` with ``causal`` semantics is ``causal_window``)."""
    if kind == "complete":
        return complete_graph(n)
    if kind == "causal":
        return causal_graph(n)
    if kind in ("window", "causal_window"):
        if window is None:
            raise ValueError(f"kind={kind!r} needs window")
        return grid_graph(n, window, 1, dilation, causal=kind == "causal_window")
    raise ValueError(f"unknown sequence graph kind {kind!r}; expected complete, causal, window or causal_window")


def collaborative_kg(n_users: int, n_entities: int, interactions: np.ndarray | Tensor,
                     kg: np.ndarray | Tensor, n_relations: int) -> Data:
    """KGAT's collaborative knowledge graph (Wang et al., KDD 2019, Sec. 2.2 and the official loader).

    Nodes: entities first (items are entities ``0 .. n_items-1``), then users at ``n_entities + u``, in one id
    space as the official code uses. ``node_type`` is 0 for entities and 1 for users.

    Relations (KGAT's id layout, ``2 * n_relations + 2`` types):
    ``0`` interact (user <- item), ``1 .. R`` the KG relations, ``R + 1`` interacted-by (item <- user),
    ``R + 2 .. 2R + 1`` the inverse KG relations.

    Edges: a triple ``(h, r, t)`` sends ``t``'s embedding to ``h``, so it becomes the edge ``t -> h`` with type
    ``r``; its inverse ``(t, r_inv, h)`` is the edge ``h -> t``. For an interaction ``(u, i)``: edge
    ``i -> u`` (interact) and ``u -> i`` (interacted-by). ``head``/``tail`` are kept so TransR can sample
    triples directly: ``head = dst``, ``tail = src``.

    Args:
        interactions: ``(N, 2)`` ``[user, item]`` training pairs.
        kg: ``(T, 3)`` ``[head_entity, relation, tail_entity]`` with relations in ``[0, n_relations)``.
    """
    inter = torch.as_tensor(np.asarray(interactions), dtype=torch.long).reshape(-1, 2)
    triples = torch.as_tensor(np.asarray(kg), dtype=torch.long).reshape(-1, 3)
    if inter.numel() and (int(inter[:, 0].max()) >= n_users or int(inter[:, 1].max()) >= n_entities):
        raise ValueError("interactions refer to users/items beyond n_users/n_entities")
    if triples.numel():
        if int(triples[:, [0, 2]].max()) >= n_entities:
            raise ValueError(f"kg refers to entity {int(triples[:, [0, 2]].max())} >= n_entities={n_entities}")
        if int(triples[:, 1].max()) >= n_relations or int(triples[:, 1].min()) < 0:
            raise ValueError(f"kg relation ids must lie in [0, {n_relations})")
    users = inter[:, 0] + n_entities
    items = inter[:, 1]
    h, r, t = triples.unbind(1)
    src = torch.cat([items, users, t, h])
    dst = torch.cat([users, items, h, t])
    rel = torch.cat([torch.full_like(items, CKG_INTERACT), torch.full_like(users, n_relations + 1),
                     r + 1, r + n_relations + 2])
    node_type = torch.cat([torch.zeros(n_entities, dtype=torch.long), torch.ones(n_users, dtype=torch.long)])
    return Data(edge_index=torch.stack([src, dst]), edge_type=rel, num_nodes=n_entities + n_users,
                node_type=node_type, n_users=n_users, n_entities=n_entities,
                num_relations=2 * n_relations + 2, n_kg_relations=n_relations)
