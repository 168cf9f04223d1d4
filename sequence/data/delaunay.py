"""Dataset ``delaunay``: planar Delaunay triangulations (Vinyals et al., "Pointer Networks", NeurIPS 2015, Sec. 4.3).

Inputs are ``n`` points uniform in ``[0, 1]^2``; the target lists the triangles of
``scipy.spatial.Delaunay``, three 1-based indices each, one after another, then the stop ``0`` (the file
line reads ``x1 y1 ... output 1 2 3 1 3 4 ...``). Canonical order, as the paper's: each triangle's vertices
counter-clockwise from its smallest index, the triangles sorted by their incenters (x, then y). Training
and validation instances have ``n`` uniform in ``[n_min, n_max]``, test instances ``n = test_n``; generated
from ``data_seed`` or read from files in the paper's format (``delaunay_train_file`` / ``_valid_file`` /
``_test_file``; the outputs are used as given).

Metrics besides exact accuracy (:class:`DelaunayProblem`): ``triangle_coverage``, the mean over instances
of the fraction of true triangles (as vertex sets) that the output contains (the paper's coverage); an
output is read in groups of three up to its stop, and a group that is not three distinct valid indices
counts as no triangle (a trailing group of fewer than three too). ``invalid_rate``: the fraction of
outputs that did not stop, have a length that is not a multiple of 3, or hold such a group.

Keys (``sequence/dataset/delaunay.yaml``): n_min, n_max, test_n, train_size, valid_size, test_size,
data_seed, delaunay_train_file, delaunay_valid_file, delaunay_test_file.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy.spatial import Delaunay

from graphattn.registry import register_dataset

from .base import STOP, PointerProblem, SequenceData, check_int_keys, generated_or_file_splits, key_source
from .geometry import signed_area

__all__ = ["incenter", "delaunay_target", "generate_delaunay", "output_triangles", "DelaunayProblem",
           "load_delaunay"]


def incenter(xy: np.ndarray) -> np.ndarray:
    """The incenter of the triangle ``xy`` (3, 2): its vertices weighted by the lengths of the opposite sides."""
    a = np.linalg.norm(xy[1] - xy[2])
    b = np.linalg.norm(xy[2] - xy[0])
    c = np.linalg.norm(xy[0] - xy[1])
    return (a * xy[0] + b * xy[1] + c * xy[2]) / (a + b + c)


def _ccw_from_smallest(points: np.ndarray, tri: Sequence[int]) -> list[int]:
    tri = [int(v) for v in tri]
    if signed_area(points[tri]) < 0:
        tri = tri[::-1]
    k = tri.index(min(tri))
    return tri[k:] + tri[:k]


def delaunay_target(points: np.ndarray) -> list[int]:
    """The canonical target of ``points`` (n, 2), n >= 3: flattened 1-based triangles, then ``STOP``."""
    triangles = [_ccw_from_smallest(points, t) for t in Delaunay(points).simplices]
    triangles.sort(key=lambda t: tuple(incenter(points[t])))
    return [v + 1 for t in triangles for v in t] + [STOP]


def generate_delaunay(size: int, n_min: int, n_max: int, rng: np.random.Generator
                      ) -> tuple[list[np.ndarray], list[list[int]]]:
    """``size`` instances with ``n`` uniform in ``[n_min, n_max]``: point arrays and targets (with ``STOP``)."""
    ns = rng.integers(n_min, n_max + 1, size=size)
    points = [rng.random((int(n), 2)) for n in ns]
    return points, [delaunay_target(p) for p in points]


def output_triangles(output: Sequence[int], n: int) -> tuple[set[frozenset[int]], bool]:
    """The triangles (vertex sets) of a decoded output and whether it was well formed (see module doc)."""
    stopped = len(output) > 0 and output[-1] == STOP
    body = list(output[:-1] if stopped else output)
    ok = stopped and len(body) % 3 == 0
    triangles = set()
    for i in range(0, len(body) - 2, 3):
        group = body[i:i + 3]
        if len(set(group)) == 3 and all(1 <= v <= n for v in group):
            triangles.add(frozenset(group))
        else:
            ok = False
    return triangles, ok


class DelaunayProblem(PointerProblem):
    name = "Delaunay triangulation"
    metric_names = ("triangle_coverage", "invalid_rate")
    lower_is_better = ("invalid_rate",)

    def max_steps(self, n_points: int) -> int:
        return 3 * max(2 * n_points - 5, 1) + 1  # a triangulation of n points has at most 2n - 5 triangles

    def evaluate(self, points, predictions, targets):
        cover, invalid = [], 0
        for p, y, t in zip(points, predictions, targets):
            true, _ = output_triangles(t, len(p))
            got, ok = output_triangles(y, len(p))
            cover.append(len(true & got) / len(true))
            invalid += not ok
        n = max(len(cover), 1)
        return {"triangle_coverage": float(np.mean(cover)) if cover else 0.0, "invalid_rate": invalid / n}


def _check(config: Mapping[str, Any]) -> None:
    check_int_keys(config, {"n_min": 3, "test_n": 3, "train_size": 1, "valid_size": 1, "test_size": 1},
                   " (a triangle needs 3 points)")
    if config["n_max"] < config["n_min"]:
        raise ValueError(f"n_min ({config['n_min']}) must not exceed n_max ({config['n_max']}); "
                         f"set {key_source(config, 'n_min')} <= {key_source(config, 'n_max')}")
    for split in ("train", "valid", "test"):
        key = f"delaunay_{split}_file"
        if config[key] is not None and not isinstance(config[key], str):
            raise TypeError(f"{key_source(config, key)}: expected a path (str) or null, got {config[key]!r}")


def load_delaunay(config: Mapping[str, Any]) -> SequenceData:
    """The ``delaunay`` dataset as the config says (module docstring)."""
    _check(config)
    splits = generated_or_file_splits(config, "delaunay", generate_delaunay)
    return SequenceData("delaunay", splits["train"], splits["valid"], splits["test"], DelaunayProblem())


register_dataset("delaunay", task="sequence", loader=load_delaunay,
                 description="Delaunay triangulations of uniform points (triangles as index triples), generated "
                             "from data_seed (or paper-format files)")
