"""Synthetic "birds": 7 x 7 grids of patch features with a class-specific foreground and a spurious background.

The stand-in for CUB-200 + a ResNet-50 layer-4 feature map (spec ``chm-corr-interactive.md``, small scale).
Each of ``classes`` classes has ``parts`` part prototypes (a shared "bird part" direction plus a class-specific
one, so different species look alike part by part) laid out on a fixed body template of ``FOREGROUND_TEMPLATE``
cells (about 12) shifted by a random jitter of up to one cell per axis. Every other cell is background: one of
``backgrounds`` background prototypes for the whole image. In training the background is the class's own
(``class % backgrounds``) with probability ``p_spurious`` and random otherwise; at test it is random, so a
classifier that looks at the background is misled. Gaussian noise is added to every patch.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["GRID", "FOREGROUND_TEMPLATE", "Birds", "make_birds"]

GRID = 7
# body template (row, col) on the 7 x 7 grid before jitter, with the part index of each cell
FOREGROUND_TEMPLATE = [
    ((1, 2), 0), ((1, 3), 0),                     # head
    ((2, 2), 1), ((2, 3), 1), ((2, 4), 1),        # breast / back
    ((3, 2), 2), ((3, 3), 2), ((3, 4), 2),        # wing
    ((4, 3), 3), ((4, 4), 3),                     # belly
    ((5, 3), 4), ((5, 4), 4),                     # tail
]


@dataclass
class Birds:
    """Patch features ``(n, 49, dim)``, labels ``(n,)``, foreground masks ``(n, 49)`` (bool) and the background
    prototype index of each image ``(n,)``."""

    features: np.ndarray
    labels: np.ndarray
    foreground: np.ndarray
    background: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _draw(rng, n_per_class: int, classes: int, part_protos, bg_protos, p_spurious: float, noise: float,
          shared_bg_strength: float, bg_noise: float) -> Birds:
    dim = part_protos.shape[-1]
    n = classes * n_per_class
    feats = np.empty((n, GRID * GRID, dim), dtype=np.float32)
    labels = np.repeat(np.arange(classes), n_per_class)
    fg = np.zeros((n, GRID * GRID), dtype=bool)
    bgs = np.empty(n, dtype=np.int64)
    for i, c in enumerate(labels):
        own = c % len(bg_protos)
        bg = own if rng.random() < p_spurious else int(rng.integers(len(bg_protos)))
        bgs[i] = bg
        grid = np.repeat(bg_protos[bg][None], GRID * GRID, 0) * shared_bg_strength
        dr, dc = rng.integers(-1, 2, size=2)
        for (r, col), part in FOREGROUND_TEMPLATE:
            cell = (r + dr) * GRID + (col + dc)
            grid[cell] = part_protos[c, part]
            fg[i, cell] = True
        scale = np.linalg.norm(grid, axis=-1, keepdims=True)                  # noise relative to each patch's norm
        scale = scale * np.where(fg[i], noise, bg_noise)[:, None]
        feats[i] = grid + scale / np.sqrt(dim) * rng.standard_normal(grid.shape)
    return Birds(feats, labels, fg, bgs)


def make_birds(seed: int = 0, *, classes: int = 20, parts: int = 5, backgrounds: int = 6, dim: int = 64,
               train_per_class: int = 50, test_per_class: int = 10, p_spurious: float = 0.8,
               noise: float = 0.35, part_similarity: float = 0.5,
               background_strength: float = 0.1, background_noise: float = 0.8) -> tuple[Birds, Birds]:
    """Train and test sets of synthetic birds (same prototypes; the test background is random).

    ``part_similarity`` in [0, 1) mixes a part direction shared by every class into each class's part
    prototype (0 = unrelated classes). ``background_strength`` scales the background patches (weak, so that the
    mean-pooled descriptor still sees the bird); ``noise`` and ``background_noise`` are the Gaussian noise norms
    relative to a patch's norm, on the bird and on the background.
    """
    if classes < 2 or parts < 1 or backgrounds < 1 or dim < 2:
        raise ValueError(f"need classes >= 2, parts >= 1, backgrounds >= 1, dim >= 2; got {classes}, {parts}, "
                         f"{backgrounds}, {dim}")
    if not 0.0 <= p_spurious <= 1.0 or not 0.0 <= part_similarity < 1.0:
        raise ValueError(f"p_spurious must be in [0, 1] and part_similarity in [0, 1); got {p_spurious}, "
                         f"{part_similarity}")
    if parts > 5:
        raise ValueError(f"the body template has 5 parts; got parts={parts}")
    rng = np.random.default_rng(seed)
    shared = _unit(rng.standard_normal((1, parts, dim)))
    own = _unit(rng.standard_normal((classes, parts, dim)))
    part_protos = _unit(part_similarity * shared + (1 - part_similarity) * own)
    bg_protos = _unit(rng.standard_normal((backgrounds, dim)))
    train = _draw(rng, train_per_class, classes, part_protos, bg_protos, p_spurious, noise, background_strength,
                  background_noise)
    test = _draw(rng, test_per_class, classes, part_protos, bg_protos, 0.0, noise,
                 background_strength, background_noise)
    return train, test
