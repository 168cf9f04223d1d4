"""Synthetic answer grounding: coloured shapes on a canvas and a templated question about one of them.

The task of Khoshsirat & Kambhamettu, "Sentence Attention Blocks for Answer Grounding" (ICCV 2023), scaled to
a CPU: each image holds 2-4 shapes (circle / square / triangle, 4 colours, every (colour, shape) pair at
most once, no overlaps), at least one distractor shares the target's colour or its shape, and the question
("where is the red circle?") names the target by colour and shape. The target is the referred shape's
binary mask; the union of the other shapes' masks is kept for the wrong-object IoU.

Questions are embedded by a frozen encoder that needs no download: a fixed random projection (seed 0) of the
bag of words, ``s = sum_w R[w] / sqrt(#words)`` (the paper uses a frozen sentence-transformers model).

Keys (``vision/dataset/shapes_grounding.yaml``): canvas_size, num_train, num_valid, num_test,
question_dim, background, split_seed.
Yields ``((image (3, S, S), question (question_dim,)), masks (2, S, S))`` with masks[0] the target and
masks[1] the distractors; ``meta["questions"]`` holds the question strings of each split.
"""
from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from graphattn.registry import register_dataset
from vision.base import VisionData

__all__ = ["COLOURS", "SHAPES", "TEMPLATES", "QuestionEncoder", "make_scene", "GroundingSet",
           "load_shapes_grounding"]

COLOURS = {"red": (0.9, 0.1, 0.1), "green": (0.1, 0.8, 0.2), "blue": (0.15, 0.25, 0.95), "yellow": (0.95, 0.9, 0.1)}
SHAPES = ("circle", "square", "triangle")
TEMPLATES = ("where is the {c} {s}?", "find the {c} {s}.", "show me the {c} {s}.", "which region is the {c} {s}?")


class QuestionEncoder:
    """Frozen bag-of-words encoder: a fixed Gaussian vector per vocabulary word, summed / sqrt(#words).

    Args:
        dim: embedding size (default 64).
        seed: seed of the projection (default 0).
    """

    def __init__(self, dim: int = 64, seed: int = 0):
        words = sorted({w for t in TEMPLATES for w in _words(t.format(c="", s=""))} | set(COLOURS) | set(SHAPES))
        self.vocab = {w: i for i, w in enumerate(words)}
        self.table = torch.randn(len(words), dim, generator=torch.Generator().manual_seed(seed))

    def __call__(self, question: str) -> torch.Tensor:
        words = _words(question)
        unknown = [w for w in words if w not in self.vocab]
        if unknown:
            raise ValueError(f"question {question!r}: words {unknown} are not in the vocabulary")
        return self.table[[self.vocab[w] for w in words]].sum(0) / len(words) ** 0.5


def _words(text: str) -> list[str]:
    return [w for w in "".join(ch if ch.isalpha() else " " for ch in text.lower()).split() if w]


def _shape_mask(kind: str, cy: float, cx: float, r: float, size: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    if kind == "circle":
        return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    if kind == "square":
        return (np.abs(yy - cy) <= r * 0.85) & (np.abs(xx - cx) <= r * 0.85)
    # upward triangle with apex at the top: inside the three half-planes
    top, base = cy - r, cy + r * 0.8
    half = (yy - top) / (base - top) * r
    return (yy >= top) & (yy <= base) & (np.abs(xx - cx) <= half)


def make_scene(rng: np.random.Generator, size: int, background: np.ndarray | None = None):
    """One scene: (image (3, S, S) float32, question, target mask (S, S) bool, distractor mask (S, S) bool)."""
    pairs = list(itertools.product(COLOURS, SHAPES))
    while True:
        n = int(rng.integers(2, 5))
        chosen = [pairs[i] for i in rng.choice(len(pairs), n, replace=False)]
        target = chosen[0]
        if any(c == target[0] or s == target[1] for c, s in chosen[1:]):
            break
    if background is None:
        image = np.full((3, size, size), 0.35, dtype=np.float32) + rng.normal(0, 0.05, (3, size, size)).astype(np.float32)
    else:
        image = background.copy()
    occupied = np.zeros((size, size), dtype=bool)
    masks = []
    for colour, kind in chosen:
        for _ in range(100):
            r = rng.uniform(size * 0.12, size * 0.2)
            cy, cx = rng.uniform(r + 1, size - r - 1, size=2)
            m = _shape_mask(kind, cy, cx, r, size)
            if not (m & occupied).any() and m.sum() > 4:
                break
        else:
            return make_scene(rng, size, background)
        occupied |= m
        masks.append(m)
        shade = np.asarray(COLOURS[colour], dtype=np.float32) * rng.uniform(0.85, 1.0)
        image[:, m] = shade[:, None]
    question = TEMPLATES[int(rng.integers(len(TEMPLATES)))].format(c=target[0], s=target[1])
    wrong = np.zeros((size, size), dtype=bool)
    for m in masks[1:]:
        wrong |= m
    return np.clip(image, 0, 1), question, masks[0], wrong


class GroundingSet(Dataset):
    """Pre-generated scenes. Items: ``((image, question_embedding), masks (2, S, S))``."""

    def __init__(self, n: int, size: int, seed: int, encoder: QuestionEncoder, backgrounds: np.ndarray | None = None):
        rng = np.random.default_rng(seed)
        imgs, qs, masks = [], [], []
        self.questions: list[str] = []
        for _ in range(n):
            bg = None
            if backgrounds is not None:
                bg = backgrounds[int(rng.integers(len(backgrounds)))]
            img, q, tgt, wrong = make_scene(rng, size, bg)
            imgs.append(img)
            qs.append(encoder(q))
            masks.append(np.stack([tgt, wrong]))
            self.questions.append(q)
        self.images = torch.from_numpy(np.stack(imgs))
        self.embeddings = torch.stack(qs)
        self.masks = torch.from_numpy(np.stack(masks).astype(np.float32))

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i):
        return (self.images[i], self.embeddings[i]), self.masks[i]


def _photo_backgrounds(size: int, count: int, seed: int) -> np.ndarray:
    """Dimmed random crops of scikit-learn's bundled sample photos (china, flower)."""
    from sklearn.datasets import load_sample_images
    rng = np.random.default_rng(seed)
    photos = [im.astype(np.float32) / 255.0 for im in load_sample_images().images]
    out = []
    for _ in range(count):
        p = photos[int(rng.integers(len(photos)))]
        y, x = rng.integers(0, p.shape[0] - size), rng.integers(0, p.shape[1] - size)
        out.append(0.2 + 0.4 * p[y:y + size, x:x + size].transpose(2, 0, 1))
    return np.stack(out)


def load_shapes_grounding(config: Any) -> VisionData:
    size = int(config["canvas_size"])
    if size < 16:
        raise ValueError(f"canvas_size: expected an int >= 16, got {size}")
    background = str(config["background"])
    if background not in ("plain", "photo"):
        raise ValueError(f"background: expected 'plain' or 'photo', got {background!r}")
    encoder = QuestionEncoder(int(config["question_dim"]))
    seed = int(config["split_seed"])
    bgs = _photo_backgrounds(size, 64, seed) if background == "photo" else None
    splits = [GroundingSet(int(config[f"num_{s}"]), size, seed * 1000 + i, encoder, bgs)
              for i, s in enumerate(("train", "valid", "test"))]
    meta = {"in_channels": 3, "image_size": size, "question_dim": encoder.table.shape[1],
            "questions": {s: d.questions for s, d in zip(("train", "valid", "test"), splits)}}
    return VisionData(*splits, num_classes=2, meta=meta)


register_dataset("shapes_grounding", task="vision", loader=load_shapes_grounding,
                 description="synthetic answer grounding: coloured shapes + templated questions -> target mask")
