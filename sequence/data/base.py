"""Pointer-output data: point sets with target index sequences, and the problem that judges decoded outputs.

Index convention (the paper's): an output token ``j >= 1`` points at input ``j`` (1-based), ``0`` (:data:`STOP`)
is the end symbol, so a model's pointer position 0 is its stop vector. In memory a target always ends with
``STOP``; the text files (:mod:`sequence.data.pointer_file`) leave the stop out. Padding after the stop is
:data:`PAD` (``-1``) and is ignored by the loss.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = ["STOP", "PAD", "PointerSplit", "PointerProblem", "SequenceData", "key_source", "check_int_keys"]

STOP = 0
PAD = -1


@dataclass
class PointerSplit:
    """One split as padded tensors.

    Attributes:
        points: ``(N, n_max, D)`` float32, zero after each instance's ``lengths[i]`` points.
        lengths: ``(N,)`` int64, number of input points of each instance.
        targets: ``(N, T_max)`` int64, 1-based pointers, then ``STOP``, then ``PAD``.
    """

    points: Tensor
    lengths: Tensor
    targets: Tensor

    @classmethod
    def from_lists(cls, points: Sequence[np.ndarray], targets: Sequence[Sequence[int]]) -> PointerSplit:
        """Pad instances given as ``(n_i, D)`` arrays and target lists that end with ``STOP``."""
        if len(points) != len(targets):
            raise ValueError(f"got {len(points)} point sets but {len(targets)} targets; one target per point set")
        if not points:
            raise ValueError("a split needs at least one instance, got none")
        dims = {np.asarray(p).shape[1] if np.ndim(p) == 2 else None for p in points}
        if len(dims) != 1 or None in dims:
            raise ValueError(f"every point set must be an (n, D) array with one D, got dimensions {sorted(map(str, dims))}")
        (dim,) = dims
        n_max, t_max = max(len(p) for p in points), max(len(t) for t in targets)
        xy = torch.zeros(len(points), n_max, dim, dtype=torch.float32)
        out = torch.full((len(points), t_max), PAD, dtype=torch.long)
        for i, (p, t) in enumerate(zip(points, targets)):
            n = len(p)
            if n == 0:
                raise ValueError(f"instance {i} has no points")
            t = [int(v) for v in t]
            if not t or t[-1] != STOP or STOP in t[:-1] or min(t) < 0 or max(t) > n:
                raise ValueError(f"instance {i}: a target is 1-based pointers into its {n} points ending with the "
                                 f"stop {STOP} (and no other {STOP}), got {t}")
            xy[i, :n] = torch.as_tensor(np.asarray(p, dtype=np.float64), dtype=torch.float32)
            out[i, :len(t)] = torch.tensor(t)
        lengths = torch.tensor([len(p) for p in points], dtype=torch.long)
        return cls(xy, lengths, out)

    def __len__(self) -> int:
        return int(self.lengths.numel())

    @property
    def dim(self) -> int:
        return int(self.points.shape[-1])

    def batch(self, index: Tensor) -> dict[str, Tensor]:
        """Instances ``index`` with padding trimmed to the longest of them."""
        lengths = self.lengths[index]
        targets = self.targets[index]
        n = int(lengths.max())
        t = int((targets != PAD).sum(1).max())
        return {"points": self.points[index, :n], "lengths": lengths, "targets": targets[:, :t]}

    def point_list(self) -> list[np.ndarray]:
        """The instances as ``(n_i, D)`` float64 arrays (what problems' metrics read)."""
        return [self.points[i, :n].double().numpy() for i, n in enumerate(self.lengths.tolist())]

    def target_list(self) -> list[list[int]]:
        """The targets as lists ending with ``STOP``."""
        return [[v for v in row if v != PAD] for row in self.targets.tolist()]


class PointerProblem:
    """What a dataset says about its outputs beyond exact-match accuracy (computed by the task for all).

    Subclasses set :attr:`name`, :attr:`metric_names` (and :attr:`lower_is_better`, those of them where a
    smaller value is better) and override :meth:`evaluate` (and :meth:`max_steps` when outputs can be longer
    than ``n + 1``).
    """

    name: str = "pointer"
    metric_names: tuple[str, ...] = ()
    lower_is_better: tuple[str, ...] = ()

    def max_steps(self, n_points: int) -> int:
        """Decoding steps allowed for inputs of ``n_points`` points, stop included."""
        return n_points + 1

    def evaluate(self, points: list[np.ndarray], predictions: list[list[int]],
                 targets: list[list[int]]) -> dict[str, float]:
        """Problem-specific metrics of a split. A prediction ends with ``STOP`` when the model stopped."""
        return {}


@dataclass
class SequenceData:
    """What a ``sequence`` dataset loader returns: three splits and the problem that judges outputs."""

    name: str
    train: PointerSplit
    valid: PointerSplit
    test: PointerSplit
    problem: PointerProblem

    def __post_init__(self) -> None:
        dims = {self.train.dim, self.valid.dim, self.test.dim}
        if len(dims) != 1:
            raise ValueError(f"dataset '{self.name}': splits have different point dimensions {sorted(dims)}")

    @property
    def input_dim(self) -> int:
        return self.train.dim

    def split(self, name: str) -> PointerSplit:
        if name not in ("train", "valid", "test"):
            raise ValueError(f"unknown split '{name}'; expected train, valid or test")
        return getattr(self, name)

    def __str__(self) -> str:
        def info(s: PointerSplit) -> str:
            lo, hi = int(s.lengths.min()), int(s.lengths.max())
            return f"{len(s)} (n {lo})" if lo == hi else f"{len(s)} (n {lo}-{hi})"

        return (f"{self.name}: {self.problem.name}, train {info(self.train)}, valid {info(self.valid)}, "
                f"test {info(self.test)}")


def key_source(config: Mapping[str, Any], key: str) -> str:
    """``'key' (from <layer>)`` when the config knows where the key was set (for error messages)."""
    source = getattr(config, "source", None)
    return f"'{key}' (from {source(key)})" if callable(source) else f"'{key}'"


def check_int_keys(config: Mapping[str, Any], lows: Mapping[str, int], why: str = "") -> None:
    """Each ``config[key]`` is an int >= ``lows[key]``, else a ``ValueError`` naming the key and its layer."""
    for key, low in lows.items():
        value = config[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{key_source(config, key)}: expected an int >= {low}{why}, got {value!r}")


def generated_or_file_splits(config: Mapping[str, Any], file_prefix: str,
                             generate: Callable[[int, int, int, np.random.Generator], tuple[list, list]]
                             ) -> dict[str, PointerSplit]:
    """The train / valid / test splits of a generated pointer dataset.

    Each split is read from ``<file_prefix>_<split>_file`` (the paper's format) when that key is set, else
    generated as ``generate(<split>_size, n_lo, n_hi, rng)`` with ``rng`` seeded by ``(data_seed, split
    index)``: train and valid draw n in ``[n_min, n_max]``, test uses ``n = test_n``. Targets end with STOP.
    """
    from .pointer_file import read_pointer_file

    seed = int(config["data_seed"])
    n_range = {"train": (config["n_min"], config["n_max"]), "valid": (config["n_min"], config["n_max"]),
               "test": (config["test_n"], config["test_n"])}
    splits = {}
    for k, split in enumerate(("train", "valid", "test")):
        path = config[f"{file_prefix}_{split}_file"]
        if path is not None:
            points, outputs = read_pointer_file(path)
            targets = [[*o, STOP] for o in outputs]
        else:
            points, targets = generate(int(config[f"{split}_size"]), *n_range[split], np.random.default_rng([seed, k]))
        splits[split] = PointerSplit.from_lists(points, targets)
    return splits
