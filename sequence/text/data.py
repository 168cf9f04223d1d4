"""Text-classification data: padded token splits with a binary label and the ground-truth important tokens.

Token id ``0`` (:data:`PAD`) is padding; every split is right-padded, so an instance's real tokens are its
first ``lengths[i]`` positions. ``cue`` marks the tokens that decide the label (the planted cue words of
:mod:`sequence.text.planted_cue`), against which attention is judged.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["PAD", "TextSplit", "TextData"]

PAD = 0


@dataclass
class TextSplit:
    """One split as padded tensors.

    Attributes:
        tokens: ``(N, T_max)`` int64 token ids, :data:`PAD` after each instance's ``lengths[i]`` tokens.
        lengths: ``(N,)`` int64, number of real tokens (>= 1).
        labels: ``(N,)`` float32 in {0, 1} (the observed label, noise included).
        cue: ``(N, T_max)`` bool, True on the ground-truth important tokens.
    """

    tokens: Tensor
    lengths: Tensor
    labels: Tensor
    cue: Tensor

    def __post_init__(self) -> None:
        n = self.tokens.shape[0]
        if self.tokens.dim() != 2 or n == 0:
            raise ValueError(f"tokens must be a non-empty (N, T) tensor, got shape {tuple(self.tokens.shape)}")
        if self.lengths.shape != (n,) or self.labels.shape != (n,) or self.cue.shape != self.tokens.shape:
            raise ValueError(f"lengths and labels must be ({n},) and cue {tuple(self.tokens.shape)}; got "
                             f"{tuple(self.lengths.shape)}, {tuple(self.labels.shape)}, {tuple(self.cue.shape)}")
        if int(self.lengths.min()) < 1 or int(self.lengths.max()) > self.tokens.shape[1]:
            raise ValueError(f"lengths must lie in [1, {self.tokens.shape[1]}], got range "
                             f"[{int(self.lengths.min())}, {int(self.lengths.max())}]")

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def batch(self, index: Tensor) -> dict[str, Tensor]:
        """Instances ``index`` trimmed to their longest: tokens, mask (True = real token), label, cue."""
        lengths = self.lengths[index]
        t = int(lengths.max())
        return {"tokens": self.tokens[index, :t], "mask": torch.arange(t) < lengths[:, None],
                "label": self.labels[index], "cue": self.cue[index, :t]}


@dataclass
class TextData:
    """Train / valid / test splits of one text-classification dataset."""

    name: str
    train: TextSplit
    valid: TextSplit
    test: TextSplit
    vocab_size: int

    @property
    def max_len(self) -> int:
        return max(s.tokens.shape[1] for s in (self.train, self.valid, self.test))

    def split(self, name: str) -> TextSplit:
        if name not in ("train", "valid", "test"):
            raise ValueError(f"unknown split {name!r}; expected train, valid or test")
        return getattr(self, name)

    def __str__(self) -> str:
        return (f"{self.name}: {len(self.train)} train / {len(self.valid)} valid / {len(self.test)} test, "
                f"vocabulary {self.vocab_size}, lengths up to {self.max_len}, "
                f"{float(self.train.labels.mean()):.1%} positive")
