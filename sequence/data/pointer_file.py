"""The Pointer Networks paper's text format, one instance per line (convex hull, Delaunay, TSP files)::

    x1 y1 x2 y2 ... xn yn output 1 3 2 5 1

Coordinates of the ``n`` input points, the word ``output``, then the target as 1-based indices into the
points (no stop symbol; readers of this package append it). Blank lines are skipped.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np

from graphattn.io import atomic_write_text

__all__ = ["read_pointer_file", "write_pointer_file", "parse_pointer_line"]

_SEPARATOR = "output"


def parse_pointer_line(line: str, dim: int = 2, where: str = "line") -> tuple[np.ndarray, list[int]]:
    """``(points (n, dim) float64, 1-based output)`` of one line; ``ValueError`` starting with ``where``."""
    tokens = line.split()
    if tokens.count(_SEPARATOR) != 1:
        raise ValueError(f"{where}: expected 'x1 y1 ... output i1 i2 ...' with one '{_SEPARATOR}' word, "
                         f"got {tokens.count(_SEPARATOR)}")
    cut = tokens.index(_SEPARATOR)
    coords, output = tokens[:cut], tokens[cut + 1:]
    if not coords or len(coords) % dim:
        raise ValueError(f"{where}: expected a multiple of {dim} coordinates before '{_SEPARATOR}', got {len(coords)}")
    try:
        values = [float(c) for c in coords]
    except ValueError as exc:
        raise ValueError(f"{where}: a coordinate is not a number ({exc})") from None
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"{where}: coordinates must be finite numbers")
    points = np.asarray(values, dtype=np.float64).reshape(-1, dim)
    if not output:
        raise ValueError(f"{where}: no indices after '{_SEPARATOR}'")
    try:
        indices = [int(t) for t in output]
    except ValueError:
        raise ValueError(f"{where}: output indices must be integers, got {' '.join(output)!r}") from None
    bad = [i for i in indices if not 1 <= i <= len(points)]
    if bad:
        raise ValueError(f"{where}: output indices are 1-based into {len(points)} points, got {bad[:5]} "
                         f"(a 0-based file must be shifted by one)")
    return points, indices


def read_pointer_file(path: str | Path, dim: int = 2) -> tuple[list[np.ndarray], list[list[int]]]:
    """All instances of a file: point arrays and 1-based outputs (without a stop symbol)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pointer data file '{path}' not found")
    points, outputs = [], []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            p, o = parse_pointer_line(line, dim, where=f"{path}:{lineno}")
            points.append(p)
            outputs.append(o)
    if not points:
        raise ValueError(f"{path}: no instances (the file is empty)")
    return points, outputs


def write_pointer_file(path: str | Path, points: Sequence[np.ndarray], outputs: Sequence[Sequence[int]]) -> Path:
    """Write instances in the paper's format; floats as their shortest round-trip ``repr``, so reading back
    gives the same float64 values. ``outputs`` are 1-based, without a stop symbol. The write is atomic."""
    if len(points) != len(outputs):
        raise ValueError(f"got {len(points)} point sets but {len(outputs)} outputs")
    path = Path(path)
    lines = []
    for p, o in zip(points, outputs):
        coords = " ".join(repr(float(v)) for v in np.asarray(p, dtype=np.float64).ravel())
        lines.append(f"{coords} {_SEPARATOR} {' '.join(str(int(i)) for i in o)}\n")
    atomic_write_text(path, "".join(lines))
    return path
