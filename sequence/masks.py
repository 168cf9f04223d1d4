"""Decoding masks: which input positions a pointer decoder may choose at each step (``decode_mask`` key).

A mask starts from ``valid`` (B, 1 + N): column 0 is the stop symbol, column ``j`` input ``j``, False on
padding. :meth:`StepMask.allowed` gives the positions allowed now, :meth:`StepMask.update` records the
choice just made, :meth:`StepMask.select` keeps the rows ``index`` (beam search reorders its beams with it).
Masks constrain decoding; training scores every target step against ``valid`` only, unless the task's
``train_mask`` key applies the rule to the teacher-forced steps too (:func:`teacher_forced_mask`).

- ``none``: padding only (the paper decodes convex hulls without constraints).
- ``polygon``: a closed polygon, as the replication's hull decoder: three new distinct points first (no
  stop), then a new point or the first point again (which closes the polygon), then only the stop.
- ``tour``: a closed TSP tour, the paper's constraint for TSP: every real input exactly once (no stop, no
  repeat), then the first input again (which closes the tour), then only the stop.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .data.base import STOP

__all__ = ["StepMask", "PolygonMask", "TourMask", "STEP_MASKS", "step_mask", "check_mask_name", "teacher_forced_mask"]


class StepMask:
    """Padding only."""

    state: tuple[str, ...] = ("valid",)   # the per-row tensors :meth:`select` reorders

    def __init__(self, valid: Tensor) -> None:
        self.valid = valid

    def allowed(self) -> Tensor:
        return self.valid

    def update(self, choice: Tensor) -> None:
        """``choice`` (B,) the positions just chosen."""

    def select(self, index: Tensor) -> None:
        """Keep rows ``index`` (B',) of every per-row tensor, in that order (B' may differ from B)."""
        for name in self.state:
            setattr(self, name, getattr(self, name)[index])


class _ClosedWalk(StepMask):
    """Distinct points, closed by repeating the first, then the stop; subclasses say when closing is allowed."""

    state = ("valid", "visited", "first", "count", "closed")

    def __init__(self, valid: Tensor) -> None:
        super().__init__(valid)
        b = valid.shape[0]
        self.visited = torch.zeros_like(valid)
        self.first = torch.zeros(b, dtype=torch.long, device=valid.device)
        self.count = torch.zeros(b, dtype=torch.long, device=valid.device)
        self.closed = torch.zeros(b, dtype=torch.bool, device=valid.device)

    def may_close(self) -> Tensor:
        raise NotImplementedError

    def allowed(self) -> Tensor:
        rows = torch.arange(self.valid.shape[0], device=self.valid.device)
        allowed = self.valid & ~self.visited
        allowed[:, STOP] = False
        allowed[rows, self.first] |= self.may_close() & ~self.closed
        allowed = torch.where(self.closed[:, None], torch.zeros_like(allowed), allowed)
        allowed[:, STOP] |= ~allowed.any(-1)  # closed, or nothing left to go on with: stopping is all that is left
        return allowed

    def update(self, choice: Tensor) -> None:
        rows = torch.arange(self.valid.shape[0], device=self.valid.device)
        self.closed |= (self.count > 0) & (choice == self.first)
        self.first = torch.where(self.count == 0, choice, self.first)
        self.visited[rows, choice] = True
        self.count += 1


class PolygonMask(_ClosedWalk):
    """A closed polygon: distinct points, at least three, closed by the first one, then the stop."""

    def may_close(self) -> Tensor:
        return self.count >= 3


class TourMask(_ClosedWalk):
    """A closed tour: every real input once, closed by the first one, then the stop."""

    def __init__(self, valid: Tensor) -> None:
        super().__init__(valid)
        self.n = valid[:, 1:].sum(1)
        self.state = (*self.state, "n")

    def may_close(self) -> Tensor:
        return (self.count > 0) & (self.count == self.n)


STEP_MASKS: dict[str, type[StepMask]] = {"none": StepMask, "polygon": PolygonMask, "tour": TourMask}


def check_mask_name(name: str) -> str:
    if name not in STEP_MASKS:
        raise ValueError(f"decode_mask: expected one of {', '.join(STEP_MASKS)}, got {name!r}")
    return name


def step_mask(name: str, valid: Tensor) -> StepMask:
    """The mask ``name`` (``decode_mask``) for a batch whose valid positions are ``valid`` (B, 1 + N)."""
    return STEP_MASKS[check_mask_name(name)](valid)


def teacher_forced_mask(name: str, valid: Tensor, targets: Tensor) -> Tensor:
    """(B, T, 1 + N): the positions the rule ``name`` allows at each step of ``targets`` (B, T) (padding
    ``-1`` after the stop is fed as the stop, its steps do not count); ``ValueError`` when a target step is
    not allowed (the loss would be infinite)."""
    mask, steps = step_mask(name, valid), []
    for t in range(targets.shape[1]):
        steps.append(mask.allowed())
        mask.update(targets[:, t].clamp_min(0))
    allowed = torch.stack(steps, 1)
    real = targets >= 0
    ok = allowed.gather(-1, targets.clamp_min(0)[..., None])[..., 0] | ~real
    if not bool(ok.all()):
        row, step = (int(v) for v in (~ok).nonzero()[0])
        raise ValueError(f"target {targets[row].tolist()} breaks the '{name}' rule at step {step}; "
                         "set train_mask: false (or a decode_mask the targets obey)")
    return allowed
