"""Dataset ``convex-hull``: planar convex hulls (Vinyals et al., "Pointer Networks", NeurIPS 2015, Sec. 4.2).

Inputs are ``n`` points uniform in ``[0, 1]^2``; the target lists the hull's vertices counter-clockwise,
starting from the hull vertex with the smallest input index, closed by repeating that first index, then the
stop ``0`` (indices 1-based). Training instances have ``n`` uniform in ``[n_min, n_max]``, validation
instances too; test instances have ``n = test_n``. Splits are generated from ``data_seed`` (independent of
the training ``seed``), or read from files in the paper's format (``hull_train_file`` / ``hull_valid_file``
/ ``hull_test_file``; the outputs are used as given).

Metrics besides exact accuracy (:class:`ConvexHullProblem`): ``area_coverage``, the mean over instances of
predicted polygon area / true hull area with a failed output counting 0; ``area_valid``, the same mean over
the outputs that did not fail (what the replication reports); ``fail_rate``. An output fails when it is not
a simple polygon: it did not stop, is not closed (its last index before the stop is not its first), has
fewer than 3 vertices, repeats a vertex, or its edges cross, touch or fold back (:func:`is_simple_polygon`).

Keys (``sequence/dataset/convex-hull.yaml``): n_min, n_max, test_n, train_size, valid_size, test_size,
data_seed, hull_train_file, hull_valid_file, hull_test_file.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from scipy.spatial import ConvexHull

from graphattn.registry import register_dataset

from .base import STOP, PointerProblem, SequenceData, generated_or_file_splits, key_source
from .geometry import polygon_area, is_simple_polygon

__all__ = ["hull_target", "generate_convex_hull", "closed_polygon", "area_coverage", "ConvexHullProblem",
           "load_convex_hull"]


def hull_target(points: np.ndarray) -> list[int]:
    """The canonical target of ``points`` (n, 2): 1-based hull vertices counter-clockwise from the smallest
    index, the first repeated, then ``STOP``. ``scipy.spatial.ConvexHull`` lists 2-D vertices counter-clockwise."""
    vertices = ConvexHull(points).vertices
    order = np.roll(vertices, -int(np.argmin(vertices))) + 1
    return [*map(int, order), int(order[0]), STOP]


def generate_convex_hull(size: int, n_min: int, n_max: int, rng: np.random.Generator
                         ) -> tuple[list[np.ndarray], list[list[int]]]:
    """``size`` instances with ``n`` uniform in ``[n_min, n_max]``: point arrays and targets (with ``STOP``)."""
    ns = rng.integers(n_min, n_max + 1, size=size)
    points = [rng.random((int(n), 2)) for n in ns]
    return points, [hull_target(p) for p in points]


def closed_polygon(prediction: list[int], n: int) -> list[int] | None:
    """The 1-based vertices of a decoded closed polygon ``[i1, ..., ik, i1, STOP]``; ``None`` when the output
    did not stop, is not closed, points outside ``1..n``, repeats a vertex or has fewer than 3 vertices."""
    if len(prediction) < 2 or prediction[-1] != STOP:
        return None
    body = prediction[:-1]
    if len(body) < 4 or body[-1] != body[0]:
        return None
    vertices = body[:-1]
    if len(set(vertices)) != len(vertices) or min(vertices) < 1 or max(vertices) > n:
        return None
    return vertices


def area_coverage(points: np.ndarray, prediction: list[int], target: list[int]) -> float | None:
    """Predicted polygon area / target polygon area; ``None`` when the prediction fails (see module doc)."""
    vertices = closed_polygon(prediction, len(points))
    if vertices is None:
        return None
    xy = points[np.asarray(vertices) - 1]
    if not is_simple_polygon(xy):
        return None
    true = [i for i in target if i != STOP][:-1]
    return polygon_area(xy) / polygon_area(points[np.asarray(true) - 1])


class ConvexHullProblem(PointerProblem):
    name = "convex hull"
    metric_names = ("area_coverage", "area_valid", "fail_rate")

    def max_steps(self, n_points: int) -> int:
        return n_points + 2  # every point, the closing repeat, the stop

    def evaluate(self, points, predictions, targets):
        cover = [area_coverage(p, y, t) for p, y, t in zip(points, predictions, targets)]
        ok = [c for c in cover if c is not None]
        n = max(len(cover), 1)
        return {"area_coverage": sum(ok) / n, "area_valid": float(np.mean(ok)) if ok else 0.0,
                "fail_rate": (len(cover) - len(ok)) / n}


def _check(config: Mapping[str, Any]) -> None:
    for key, low in (("n_min", 3), ("test_n", 3), ("train_size", 1), ("valid_size", 1), ("test_size", 1)):
        value = config[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{key_source(config, key)}: expected an int >= {low} (a hull needs 3 points), got {value!r}")
    if config["n_max"] < config["n_min"]:
        raise ValueError(f"n_min ({config['n_min']}) must not exceed n_max ({config['n_max']}); "
                         f"set {key_source(config, 'n_min')} <= {key_source(config, 'n_max')}")
    for split in ("train", "valid", "test"):
        value = config[f"hull_{split}_file"]
        if value is not None and not isinstance(value, str):
            raise TypeError(f"{key_source(config, f'hull_{split}_file')}: expected a path (str) or null, got {value!r}")


def load_convex_hull(config: Mapping[str, Any]) -> SequenceData:
    """The ``convex-hull`` dataset as the config says (module docstring)."""
    _check(config)
    splits = generated_or_file_splits(config, "hull", generate_convex_hull)
    return SequenceData("convex-hull", splits["train"], splits["valid"], splits["test"], ConvexHullProblem())


register_dataset("convex-hull", task="sequence", loader=load_convex_hull,
                 description="planar convex hulls of uniform points, generated from data_seed (or paper-format files)")
