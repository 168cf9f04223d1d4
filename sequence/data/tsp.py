"""Dataset ``tsp``: planar symmetric travelling salesman (Vinyals et al., "Pointer Networks", NeurIPS 2015, Sec. 4.4).

Inputs are ``n`` cities uniform in ``[0, 1]^2``; the target is a shortest closed tour in the paper's
convention: it starts at city 1, goes in the direction whose second city has the smaller index, returns to
city 1, then the stop ``0`` (indices 1-based; the file line reads ``x1 y1 ... output 1 3 2 5 4 1``).

Labels: exact for ``n <= 12`` (:func:`held_karp`, the O(2^n n^2) dynamic programme, vectorised over a batch
of instances); for larger ``n`` the ``fast-tsp`` solver (PyPI, MIT licence; exact Held-Karp up to 20 cities,
a local search with a time budget beyond, so labels for n > 20 are near-optimal, not proven optimal, and may
differ between machines: the cache keeps them fixed). Training and validation instances have ``tsp_n``
cities, test instances ``tsp_test_n`` (null: ``tsp_n``). Splits are generated from ``data_seed`` and, with
``tsp_cache``, written in the paper's format to ``tsp_cache_dir`` and read back on the next run; or read
from given files (``tsp_train_file`` / ``tsp_valid_file`` / ``tsp_test_file``, outputs used as given).

Metrics (:class:`TSPProblem`): ``tour_length``, the mean length of the decoded tours that are feasible;
``target_length``, the mean length of the target tours; ``gap``, (sum of decoded lengths / sum of target
lengths over the feasible instances) - 1; ``infeasible``, the fraction of outputs that are not a closed tour
through every city once followed by the stop (they are left out of ``tour_length``, never repaired). With no
feasible output ``tour_length`` and ``gap`` are ``inf``. Lower is better for the first three.

Keys (``sequence/dataset/tsp.yaml``): tsp_n, tsp_test_n, train_size, valid_size, test_size, data_seed,
tsp_cache, tsp_cache_dir, tsp_solver_seconds, tsp_train_file, tsp_valid_file, tsp_test_file.
"""
from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from graphattn.registry import register_dataset

from .base import STOP, PointerProblem, PointerSplit, SequenceData, check_int_keys, key_source
from .pointer_file import read_pointer_file, write_pointer_file

__all__ = ["tour_length", "held_karp", "canonical_tour", "solve_tsp", "generate_tsp", "closed_tour",
           "TSPProblem", "load_tsp", "EXACT_MAX_N"]

EXACT_MAX_N = 12          # Held-Karp above this: fast-tsp
_SCALE = 40_000           # fast-tsp wants integer distances <= 65535; sqrt(2) * 40000 fits


def tour_length(points: np.ndarray, tour: Sequence[int]) -> float:
    """Length of the closed tour through ``points`` (n, 2) in the order ``tour`` (0-based, each city once;
    a repeated last city is fine)."""
    xy = points[np.asarray(tour)]
    return float(np.linalg.norm(xy - np.roll(xy, -1, axis=0), axis=1).sum())


def _distances(points: np.ndarray) -> np.ndarray:
    """(B, n, n) Euclidean distances of (B, n, 2) points."""
    return np.sqrt(((points[:, :, None, :] - points[:, None, :, :]) ** 2).sum(-1))


def held_karp(points: np.ndarray, chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Exact shortest tours of a batch of instances with the same ``n`` (2 <= n <= 16).

    ``dp[S, j]`` = shortest path from city 0 through the set ``S`` of cities 1..n-1 ending at ``j in S``;
    sets of one size at a time, every instance and end city at once.

    Shapes: points (B, n, 2) -> lengths (B,) float64, tours (B, n) int64 (0-based, starting at 0).
    """
    points = np.asarray(points, dtype=np.float64)
    b, n = points.shape[:2]
    if not 2 <= n <= 16:
        raise ValueError(f"held_karp: expected 2 <= n <= 16 cities (memory grows as 2^n), got {n}")
    if b > chunk:
        parts = [held_karp(points[i:i + chunk], chunk) for i in range(0, b, chunk)]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    d = _distances(points)
    m = n - 1                                                      # city c in 1..n-1 is bit c - 1
    full = 1 << m
    dp = np.full((b, full, m), np.inf)
    parent = np.zeros((b, full, m), dtype=np.int8)
    bits = np.arange(m)
    dp[:, 1 << bits, bits] = d[:, 0, 1:]
    sets = np.arange(full)
    size = np.array([int(s).bit_count() for s in sets])
    for k in range(2, m + 1):
        layer = sets[size == k]
        for j in range(m):
            with_j = layer[(layer >> j) & 1 == 1]
            # (B, S, m): reach k in S \ {j} (inf when k is not in it), then go k -> j
            cand = dp[:, with_j ^ (1 << j), :] + d[:, None, 1:, 1 + j]
            parent[:, with_j, j] = cand.argmin(-1)
            dp[:, with_j, j] = cand.min(-1)
    closing = dp[:, full - 1, :] + d[:, 1:, 0]                     # (B, m)
    lengths = closing.min(-1)
    end = closing.argmin(-1)
    tours = np.zeros((b, n), dtype=np.int64)
    rows, left = np.arange(b), np.full(b, full - 1)
    for pos in range(n - 1, 0, -1):
        tours[:, pos] = end + 1
        previous = parent[rows, left, end].astype(np.int64)
        left = left ^ (1 << end)
        end = previous
    return lengths, tours


def canonical_tour(tour: Sequence[int]) -> list[int]:
    """A 0-based tour as the paper writes it: 1-based, from city 1, towards the smaller of its two
    neighbours, closed by city 1 (no stop)."""
    tour = [int(c) for c in tour]
    if sorted(tour) != list(range(len(tour))):
        raise ValueError(f"a tour visits every city 0..{len(tour) - 1} once, got {tour}")
    start = tour.index(0)
    tour = tour[start:] + tour[:start]
    if len(tour) > 2 and tour[1] > tour[-1]:
        tour = [0, *tour[:0:-1]]
    return [c + 1 for c in tour] + [1]


def solve_tsp(points: np.ndarray, seconds: float = 0.5) -> list[int]:
    """A shortest (n <= 20) or near-shortest tour of one instance by ``fast-tsp``, 0-based."""
    try:
        import fast_tsp
    except ImportError:
        raise ImportError(f"TSP labels for more than {EXACT_MAX_N} cities need the 'fast-tsp' package "
                          "(pip install fast-tsp, or pip install -e . in this repository)") from None
    dist = np.rint(_distances(np.asarray(points, dtype=np.float64)[None])[0] * _SCALE).astype(np.int64)
    return list(fast_tsp.find_tour(dist, duration_seconds=float(seconds), stop_when_converged=True))


def generate_tsp(size: int, n: int, rng: np.random.Generator, solver_seconds: float = 0.5
                 ) -> tuple[list[np.ndarray], list[list[int]]]:
    """``size`` instances of ``n`` cities: point arrays and canonical closed 1-based tours (no stop)."""
    points = rng.random((size, n, 2))
    if n <= EXACT_MAX_N:
        _, tours = held_karp(points)
    else:
        from tqdm import tqdm

        tours = [solve_tsp(p, solver_seconds) for p in tqdm(points, desc=f"fast-tsp n={n}", leave=False,
                                                          disable=size < 50)]
    return list(points), [canonical_tour(t) for t in tours]


def closed_tour(prediction: Sequence[int], n: int) -> list[int] | None:
    """The 0-based city order of a decoded output ``[c1, ..., cn, c1, STOP]`` that visits each of the ``n``
    cities once; ``None`` when it is not such a tour (did not stop, not closed, a city missed or repeated)."""
    if len(prediction) != n + 2 or prediction[-1] != STOP or prediction[0] != prediction[-2]:
        return None
    body = list(prediction[:n])
    if sorted(body) != list(range(1, n + 1)):
        return None
    return [c - 1 for c in body]


class TSPProblem(PointerProblem):
    name = "TSP"
    metric_names = ("tour_length", "target_length", "gap", "infeasible")
    lower_is_better = ("tour_length", "target_length", "gap", "infeasible")

    def max_steps(self, n_points: int) -> int:
        return n_points + 2  # every city, the return to the first, the stop

    def evaluate(self, points, predictions, targets):
        decoded, matched, target_all, infeasible = [], [], [], 0
        for p, y, t in zip(points, predictions, targets):
            target = tour_length(p, [c - 1 for c in t if c != STOP][:-1])
            target_all.append(target)
            tour = closed_tour(y, len(p))
            if tour is None:
                infeasible += 1
                continue
            decoded.append(tour_length(p, tour))
            matched.append(target)
        n = max(len(target_all), 1)
        return {"tour_length": float(np.mean(decoded)) if decoded else math.inf,
                "target_length": float(np.mean(target_all)) if target_all else math.inf,
                "gap": sum(decoded) / sum(matched) - 1 if decoded else math.inf,
                "infeasible": infeasible / n}


def default_cache_dir() -> Path:
    """``$GRAPHATTN_DATA/tsp`` when set, else ``<repo>/data/tsp`` (git-ignored)."""
    env = os.environ.get("GRAPHATTN_DATA")
    root = Path(env).expanduser() if env else Path(__file__).resolve().parents[2] / "data"
    return root / "tsp"


def _check(config: Mapping[str, Any]) -> None:
    check_int_keys(config, {"tsp_n": 3, "train_size": 1, "valid_size": 1, "test_size": 1},
                   " (a tour needs 3 cities)")
    if config["tsp_test_n"] is not None:
        check_int_keys(config, {"tsp_test_n": 3}, " or null (a tour needs 3 cities)")
    if not float(config["tsp_solver_seconds"]) > 0:
        raise ValueError(f"{key_source(config, 'tsp_solver_seconds')}: expected seconds > 0, "
                         f"got {config['tsp_solver_seconds']!r}")
    for key in ("tsp_train_file", "tsp_valid_file", "tsp_test_file", "tsp_cache_dir"):
        if config[key] is not None and not isinstance(config[key], str):
            raise TypeError(f"{key_source(config, key)}: expected a path (str) or null, got {config[key]!r}")


def load_tsp(config: Mapping[str, Any]) -> SequenceData:
    """The ``tsp`` dataset as the config says (module docstring)."""
    _check(config)
    seed = int(config["data_seed"])
    n_train = int(config["tsp_n"])
    n_test = n_train if config["tsp_test_n"] is None else int(config["tsp_test_n"])
    cache = Path(config["tsp_cache_dir"]) if config["tsp_cache_dir"] is not None else default_cache_dir()
    splits = {}
    for k, split in enumerate(("train", "valid", "test")):
        path = config[f"tsp_{split}_file"]
        n, size = (n_test if split == "test" else n_train), int(config[f"{split}_size"])
        cached = cache / f"tsp{n}_{split}_{size}_seed{seed}_{'heldkarp' if n <= EXACT_MAX_N else 'fasttsp'}.txt"
        if path is None and config["tsp_cache"] and cached.is_file():
            path = cached
        if path is not None:
            points, outputs = read_pointer_file(path)
        else:
            points, outputs = generate_tsp(size, n, np.random.default_rng([seed, k]),
                                           float(config["tsp_solver_seconds"]))
            if config["tsp_cache"]:
                cached.parent.mkdir(parents=True, exist_ok=True)
                write_pointer_file(cached, points, outputs)
        splits[split] = PointerSplit.from_lists(points, [[*o, STOP] for o in outputs])
    return SequenceData("tsp", splits["train"], splits["valid"], splits["test"], TSPProblem())


register_dataset("tsp", task="sequence", loader=load_tsp,
                 description="planar TSP on uniform cities: exact Held-Karp labels for n <= 12, fast-tsp beyond; "
                             "generated from data_seed and cached in the paper's format (or paper-format files)")
