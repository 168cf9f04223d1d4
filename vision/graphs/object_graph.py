"""Per-frame object graphs for I-MPN: one node per detected box, directed edges between boxes of a frame with
signed spatial-relation features, frames batched as disjoint graphs.

Boxes are ``(cx, cy, w, h)`` in image-normalised coordinates (x to the right, y down). The relation of an
edge ``u -> v`` (message from ``u`` to ``v``) is

    s_uv = (cx_u - cx_v, cy_u - cy_v, log(w_u / w_v), log(h_u / h_v), dist_uv, sin(angle_uv), cos(angle_uv))

with ``angle_uv = atan2(cy_u - cy_v, cx_u - cx_v)``; it is signed, so "u is left of v" differs from "u is right
of v" (the spec's pitfall: a permutation-invariant aggregator cannot tell left from right copies without it).
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import torch
from torch import Tensor

__all__ = ["EDGE_DIM", "ObjectGraphBatch", "frame_edges", "relation_features", "collate_frames", "fixated_box"]

EDGE_DIM = 7


class ObjectGraphBatch(NamedTuple):
    """Several frames as one disjoint graph.

    x (N, F) node features; boxes (N, 4); edge_index (2, E) [src; dst]; edge_attr (E, EDGE_DIM);
    y (N,) node labels (-100 = unlabelled); batch (N,) frame of each node; gaze (B, 2) gaze point per frame.
    """

    x: Tensor
    boxes: Tensor
    edge_index: Tensor
    edge_attr: Tensor
    y: Tensor
    batch: Tensor
    gaze: Tensor


def frame_edges(boxes: Tensor, k: int | None = None) -> Tensor:
    """Directed edges between the boxes of one frame: all ordered pairs (no self-loops), or each node's
    ``k`` nearest box centres as senders. Shapes: boxes (n, 4) -> (2, E)."""
    n = boxes.shape[0]
    if n < 2:
        return torch.zeros(2, 0, dtype=torch.long, device=boxes.device)
    if k is None or k >= n - 1:
        src, dst = torch.meshgrid(torch.arange(n, device=boxes.device), torch.arange(n, device=boxes.device), indexing="ij")
        keep = src != dst
        return torch.stack([src[keep], dst[keep]])
    if k < 1:
        raise ValueError(f"k (nearest neighbours) must be >= 1 or None, got {k}")
    d = torch.cdist(boxes[:, :2], boxes[:, :2])
    d.fill_diagonal_(float("inf"))
    src = d.topk(k, dim=0, largest=False).indices                # (k, n): k nearest senders of each dst
    dst = torch.arange(n, device=boxes.device).expand(k, n)
    return torch.stack([src.reshape(-1), dst.reshape(-1)])


def relation_features(boxes: Tensor, edge_index: Tensor) -> Tensor:
    """``s_uv`` of every edge (see the module docstring). Shapes: boxes (N, 4), edge_index (2, E) -> (E, 7)."""
    u, v = boxes[edge_index[0]], boxes[edge_index[1]]
    dx, dy = u[:, 0] - v[:, 0], u[:, 1] - v[:, 1]
    dist = torch.sqrt(dx * dx + dy * dy)
    angle = torch.atan2(dy, dx)
    eps = 1e-6
    return torch.stack([dx, dy, torch.log((u[:, 2] + eps) / (v[:, 2] + eps)), torch.log((u[:, 3] + eps) / (v[:, 3] + eps)),
                        dist, torch.sin(angle), torch.cos(angle)], dim=-1)


def collate_frames(frames: Sequence[dict], k: int | None = None) -> ObjectGraphBatch:
    """Batch frames given as dicts with ``x`` (n, F), ``boxes`` (n, 4), ``y`` (n,), ``gaze`` (2,)."""
    xs, boxes, ys, batch, edges, gaze = [], [], [], [], [], []
    offset = 0
    for i, f in enumerate(frames):
        n = f["boxes"].shape[0]
        xs.append(f["x"])
        boxes.append(f["boxes"])
        ys.append(f["y"])
        batch.append(torch.full((n,), i, dtype=torch.long))
        edges.append(frame_edges(f["boxes"], k) + offset)
        gaze.append(f["gaze"])
        offset += n
    box = torch.cat(boxes)
    edge_index = torch.cat(edges, dim=1)
    return ObjectGraphBatch(torch.cat(xs), box, edge_index, relation_features(box, edge_index), torch.cat(ys), torch.cat(batch), torch.stack(gaze))


def fixated_box(boxes: Tensor, gaze: Tensor) -> int:
    """Index of the box that contains the gaze point (the smallest if several), or -1 for none."""
    inside = ((boxes[:, 0] - boxes[:, 2] / 2 <= gaze[0]) & (gaze[0] <= boxes[:, 0] + boxes[:, 2] / 2)
              & (boxes[:, 1] - boxes[:, 3] / 2 <= gaze[1]) & (gaze[1] <= boxes[:, 1] + boxes[:, 3] / 2))
    if not bool(inside.any()):
        return -1
    area = torch.where(inside, boxes[:, 2] * boxes[:, 3], torch.full_like(boxes[:, 2], float("inf")))
    return int(area.argmin())
