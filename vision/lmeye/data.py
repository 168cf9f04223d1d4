"""The LMEye miniature's data: 2x2 grids of ``load_digits`` images and templated questions.

A scene is four digits (top-left, top-right, bottom-left, bottom-right) drawn on a 16x16 canvas (each an
8x8 ``load_digits`` image, scaled to [0, 1]). Questions are token sequences of three types:

| type | template | answer |
| --- | --- | --- |
| ``position`` (position-specific) | ``what is <top|bottom> <left|right> ?`` | the digit there |
| ``row_sum`` (position-specific) | ``sum of <top|bottom> row ?`` | the sum of that row, 0-18 |
| ``exists`` (global) | ``is there a <d> ?`` (present half the time) | yes / no |

The text-only task that pretrains the small LM gives the scene as *fact tokens*, one per cell, each naming
its digit and its position (``fact(d, p)``), in random order among six fact slots (the four before the
question and the two after the request slot; the rest hold ``null``): the LM learns to answer from
whichever slots carry facts, which is what lets it later read visual tokens in those slots.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["VOCAB", "TOKEN", "QUESTION_TYPES", "POSITIONS", "fact_token", "answer_tokens", "Scenes",
           "make_scenes", "digit_images", "canvas", "PREFIX_SLOTS", "INSERT_SLOTS", "layout"]

POSITIONS = ("top-left", "top-right", "bottom-left", "bottom-right")
QUESTION_TYPES = ("position", "row_sum", "exists")
_WORDS = ["<pad>", "<null>", "<req>", "<ans>", "what", "is", "top", "bottom", "left", "right", "?", "sum", "of",
          "row", "there", "a", "yes", "no"]
VOCAB = _WORDS + [f"q{d}" for d in range(10)] + [f"n{s}" for s in range(19)] + \
    [f"fact{d}@{p}" for d in range(10) for p in range(4)]
TOKEN = {w: i for i, w in enumerate(VOCAB)}
PREFIX_SLOTS, INSERT_SLOTS = 4, 2
QUESTION_LEN = 5                    # every template is padded to 5 tokens


def fact_token(digit: int, position: int) -> int:
    return TOKEN[f"fact{digit}@{position}"]


def answer_tokens() -> list[int]:
    """Ids of every possible answer (digit / sum tokens n0-n18, yes, no)."""
    return [TOKEN[f"n{s}"] for s in range(19)] + [TOKEN["yes"], TOKEN["no"]]


def layout() -> dict[str, object]:
    """Token positions: 4 prefix fact / visual slots, 5 question tokens, the request, 2 inserted slots, answer."""
    q0 = PREFIX_SLOTS
    req = q0 + QUESTION_LEN
    return {"prefix": list(range(PREFIX_SLOTS)), "question": list(range(q0, req)), "request": req,
            "insert": list(range(req + 1, req + 1 + INSERT_SLOTS)), "answer": req + 1 + INSERT_SLOTS,
            "length": req + 2 + INSERT_SLOTS}


def _question(rng: np.random.Generator, digits: np.ndarray, kind: int) -> tuple[list[str], int]:
    if kind == 0:
        p = int(rng.integers(4))
        words = ["what", "is", "top" if p < 2 else "bottom", "left" if p % 2 == 0 else "right", "?"]
        return words, TOKEN[f"n{digits[p]}"]
    if kind == 1:
        top = bool(rng.integers(2))
        row = digits[:2] if top else digits[2:]
        return ["sum", "of", "top" if top else "bottom", "row", "?"], TOKEN[f"n{int(row.sum())}"]
    present = bool(rng.integers(2))
    pool = sorted(set(digits.tolist())) if present else sorted(set(range(10)) - set(digits.tolist()))
    d = int(rng.choice(pool))
    return ["is", "there", "a", f"q{d}", "?"], TOKEN["yes" if present else "no"]


@dataclass
class Scenes:
    """A split: ``image_ids`` (S, 4) indices into the digit images, ``digits`` (S, 4), ``question`` (S, 5)
    token ids, ``qtype`` (S,) index into QUESTION_TYPES, ``answer`` (S,) token id, ``tokens`` (S, L) the
    text-task sequence with the oracle facts (random slots)."""

    image_ids: torch.Tensor
    digits: torch.Tensor
    question: torch.Tensor
    qtype: torch.Tensor
    answer: torch.Tensor
    tokens: torch.Tensor

    def __len__(self) -> int:
        return len(self.answer)

    def subset(self, idx: torch.Tensor) -> "Scenes":
        return Scenes(*(getattr(self, f)[idx] for f in ("image_ids", "digits", "question", "qtype", "answer", "tokens")))


def make_scenes(n: int, labels: np.ndarray, pool: np.ndarray, rng: np.random.Generator) -> Scenes:
    """``n`` scenes whose cells are images drawn from ``pool`` (indices into ``labels``), with one question each."""
    if n < 1 or len(pool) < 4:
        raise ValueError(f"need n >= 1 scenes and a pool of >= 4 images, got n={n}, pool of {len(pool)}")
    lay = layout()
    image_ids = rng.choice(pool, size=(n, 4))
    digits = labels[image_ids]
    question = np.zeros((n, QUESTION_LEN), dtype=np.int64)
    qtype = rng.integers(0, 3, size=n)
    answer = np.zeros(n, dtype=np.int64)
    tokens = np.full((n, lay["length"]), TOKEN["<null>"], dtype=np.int64)
    fact_slots = lay["prefix"] + lay["insert"]
    for i in range(n):
        words, answer[i] = _question(rng, digits[i], int(qtype[i]))
        question[i] = [TOKEN[w] for w in words]
        slots = rng.choice(fact_slots, size=4, replace=False)
        for p, s in enumerate(slots):
            tokens[i, s] = fact_token(int(digits[i, p]), p)
        tokens[i, lay["question"]] = question[i]
        tokens[i, lay["request"]] = TOKEN["<req>"]
        tokens[i, lay["answer"]] = TOKEN["<ans>"]
    as_t = lambda a: torch.as_tensor(a, dtype=torch.long)  # noqa: E731
    return Scenes(as_t(image_ids), as_t(digits), as_t(question), as_t(qtype), as_t(answer), as_t(tokens))


def digit_images() -> tuple[torch.Tensor, np.ndarray]:
    """``load_digits`` as (1797, 1, 8, 8) floats in [0, 1] and their labels."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return torch.from_numpy(d.images.astype(np.float32) / 16.0).unsqueeze(1), d.target.astype(np.int64)


def canvas(images: torch.Tensor, image_ids: torch.Tensor) -> torch.Tensor:
    """(S, 4) image ids -> (S, 1, 16, 16) canvases, cells in reading order."""
    cells = images[image_ids]                                                  # (S, 4, 1, 8, 8)
    top = torch.cat([cells[:, 0], cells[:, 1]], dim=-1)
    bottom = torch.cat([cells[:, 2], cells[:, 3]], dim=-1)
    return torch.cat([top, bottom], dim=-2)
