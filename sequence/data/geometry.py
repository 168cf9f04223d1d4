"""Plane geometry for judging decoded polygons: shoelace area and a simple-polygon test."""
from __future__ import annotations

import numpy as np

__all__ = ["polygon_area", "signed_area", "is_simple_polygon"]


def signed_area(xy: np.ndarray) -> float:
    """Shoelace area of the closed polygon through the rows of ``xy`` (k, 2); positive when counter-clockwise."""
    x, y = xy[:, 0], xy[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def polygon_area(xy: np.ndarray) -> float:
    return abs(signed_area(xy))


def _cross(o: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a[..., 0] - o[..., 0]) * (b[..., 1] - o[..., 1]) - (a[..., 1] - o[..., 1]) * (b[..., 0] - o[..., 0])


def _within(p: np.ndarray, q: np.ndarray, r: np.ndarray) -> np.ndarray:
    """``r`` lies in the bounding box of segment ``p q`` (with collinearity: on the segment)."""
    lo, hi = np.minimum(p, q), np.maximum(p, q)
    return ((lo <= r) & (r <= hi)).all(-1)


def is_simple_polygon(xy: np.ndarray) -> bool:
    """Whether the closed polygon through the rows of ``xy`` (k, 2), k >= 3, is simple with non-zero area.

    Simple: no two vertices coincide, no two non-adjacent edges meet (crossing or touching), and no two
    adjacent edges fold back onto each other. All pairs of edges are tested at once (O(k^2) memory).
    """
    xy = np.asarray(xy, dtype=np.float64)
    k = len(xy)
    if k < 3 or len(np.unique(xy, axis=0)) < k or polygon_area(xy) == 0.0:
        return False
    a, b = xy, np.roll(xy, -1, axis=0)                       # edge i runs a[i] -> b[i] = a[i + 1]
    i, j = np.triu_indices(k, 1)
    adjacent = (j == i + 1) | ((i == 0) & (j == k - 1))
    # adjacent edges share one vertex; they overlap only if collinear and turning back (dot < 0)
    ia, ja = i[adjacent], j[adjacent]
    first = np.where((ia == 0) & (ja == k - 1), ja, ia)      # the edge that ends at the shared vertex
    second = np.where((ia == 0) & (ja == k - 1), ia, ja)
    u, w = b[first] - a[first], b[second] - a[second]
    fold = (u[:, 0] * w[:, 1] - u[:, 1] * w[:, 0] == 0) & ((u * w).sum(-1) < 0)
    if fold.any():
        return False
    i, j = i[~adjacent], j[~adjacent]
    if i.size == 0:
        return True
    p, q, r, s = a[i], b[i], a[j], b[j]
    o1, o2, o3, o4 = _cross(p, q, r), _cross(p, q, s), _cross(r, s, p), _cross(r, s, q)
    crossing = (o1 * o2 < 0) & (o3 * o4 < 0)
    touching = ((o1 == 0) & _within(p, q, r)) | ((o2 == 0) & _within(p, q, s)) \
        | ((o3 == 0) & _within(r, s, p)) | ((o4 == 0) & _within(r, s, q))
    return not bool((crossing | touching).any())
