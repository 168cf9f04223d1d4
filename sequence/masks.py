"""Decoding masks: which input positions a pointer decoder may choose at each step (``decode_mask`` key).

A mask starts from ``valid`` (B, 1 + N): column 0 is the stop symbol, column ``j`` input ``j``, False on
padding. :meth:`StepMask.allowed` gives the positions allowed now, :meth:`StepMask.update` records the
choice just made. Masks only constrain decoding; training scores every target step against ``valid``.

- ``none``: padding only (the paper decodes convex hulls without constraints).
- ``polygon``: a closed polygon, as the replication's hull decoder: three new distinct points first (no
  stop), then a new point or the first point again (which closes the polygon), then only the stop.

TSP's "every city once, close at the end" mask belongs here too when TSP arrives (not implemented yet).
"""
from __future__ import annotations

import torch
from torch import Tensor

from .data.base import STOP

__all__ = ["StepMask", "PolygonMask", "STEP_MASKS", "step_mask", "check_mask_name"]


class StepMask:
    """Padding only."""

    def __init__(self, valid: Tensor) -> None:
        self.valid = valid

    def allowed(self) -> Tensor:
        return self.valid

    def update(self, choice: Tensor) -> None:
        """``choice`` (B,) the positions just chosen."""


class PolygonMask(StepMask):
    """A closed polygon: distinct points, at least three, closed by the first one, then the stop."""

    def __init__(self, valid: Tensor) -> None:
        super().__init__(valid)
        b = valid.shape[0]
        self.rows = torch.arange(b, device=valid.device)
        self.visited = torch.zeros_like(valid)
        self.first = torch.zeros(b, dtype=torch.long, device=valid.device)
        self.count = torch.zeros(b, dtype=torch.long, device=valid.device)
        self.closed = torch.zeros(b, dtype=torch.bool, device=valid.device)

    def allowed(self) -> Tensor:
        allowed = self.valid & ~self.visited
        allowed[:, STOP] = False
        allowed[self.rows, self.first] |= (self.count >= 3) & ~self.closed
        allowed = torch.where(self.closed[:, None], torch.zeros_like(allowed), allowed)
        allowed[:, STOP] |= ~allowed.any(-1)  # closed, or too few points to go on: stopping is all that is left
        return allowed

    def update(self, choice: Tensor) -> None:
        self.closed |= (self.count > 0) & (choice == self.first)
        self.first = torch.where(self.count == 0, choice, self.first)
        self.visited[self.rows, choice] = True
        self.count += 1


STEP_MASKS: dict[str, type[StepMask]] = {"none": StepMask, "polygon": PolygonMask}


def check_mask_name(name: str) -> str:
    if name not in STEP_MASKS:
        raise ValueError(f"decode_mask: expected one of {', '.join(STEP_MASKS)}, got {name!r}")
    return name


def step_mask(name: str, valid: Tensor) -> StepMask:
    """The mask ``name`` (``decode_mask``) for a batch whose valid positions are ``valid`` (B, 1 + N)."""
    return STEP_MASKS[check_mask_name(name)](valid)
