"""What task ``sequence`` expects from a model: :class:`PointerModel`.

A batch is a dict of ``points`` (B, N, D) float (zero padded), ``lengths`` (B,) and ``targets`` (B, T):
1-based pointers, then the stop 0, then -1 padding (:mod:`sequence.data.base`). Pointer position 0 is the
stop symbol, position ``j`` input ``j``.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .data.base import PAD, SequenceData
from .masks import teacher_forced_mask

__all__ = ["PointerModel", "valid_positions"]


def valid_positions(lengths: Tensor, n: int) -> Tensor:
    """(B, 1 + n) bool: the stop (column 0) and each instance's real inputs."""
    cols = torch.arange(n + 1, device=lengths.device)
    return cols[None, :] <= lengths[:, None]


class PointerModel(nn.Module):
    """Base class of task ``sequence``: ``Model(config, data)``.

    Subclasses implement

    - ``forward(batch) -> (scores (B, T, 1 + N), mask (B, 1 or T, 1 + N))``: teacher-forced pointer scores of
      every target step and the positions each step may point to (``True`` = allowed);
    - ``decode(batch, max_steps, mask_rule) -> (B, S)`` long: predicted pointers, the stop 0 where the model
      stopped, -1 after it (``mask_rule`` names a :mod:`sequence.masks` rule);
    - optionally ``decode_beam(batch, max_steps, mask_rule, beam_size)``, the same output by beam search
      (used by the task when ``beam_size`` > 1; beam size 1 must equal :meth:`decode`).

    :meth:`loss` is the paper's objective: the negative log-likelihood of the target sequence (the sum of
    per-step cross-entropies over its real steps), averaged over the batch; with ``mask_rule`` each step's
    softmax runs over the positions that rule allows after the target's prefix (``train_mask``; not the paper).
    """

    def __init__(self, config: Mapping[str, Any], data: SequenceData) -> None:
        super().__init__()
        self.input_dim = data.input_dim

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        raise NotImplementedError(f"{type(self).__name__} must define forward(batch)")

    def decode(self, batch: dict[str, Tensor], max_steps: int, mask_rule: str = "none") -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} must define decode(batch, max_steps, mask_rule)")

    def decode_beam(self, batch: dict[str, Tensor], max_steps: int, mask_rule: str = "none",
                    beam_size: int = 1) -> Tensor:
        if beam_size == 1:
            return self.decode(batch, max_steps, mask_rule)
        raise NotImplementedError(f"{type(self).__name__} has no beam search (decode_beam); set beam_size: 1 "
                                  "for greedy decoding")

    def loss(self, batch: dict[str, Tensor], mask_rule: str | None = None) -> tuple[Tensor, dict[str, float]]:
        scores, mask = self(batch)
        targets = batch["targets"]
        if mask_rule is not None:
            valid = valid_positions(batch["lengths"], batch["points"].shape[1])
            mask = mask & teacher_forced_mask(mask_rule, valid, targets)
        real = targets != PAD
        log_p = F.log_softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)
        picked = log_p.gather(-1, targets.clamp_min(0)[..., None])[..., 0]            # (B, T)
        nll = -torch.where(real, picked, torch.zeros_like(picked)).sum(1)
        with torch.no_grad():
            hit = (scores.masked_fill(~mask, float("-inf")).argmax(-1) == targets) & real
            parts = {"step_nll": (nll.sum() / real.sum()).item(), "step_accuracy": (hit.sum() / real.sum()).item()}
        return nll.mean(), parts
