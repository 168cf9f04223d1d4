"""Early stopping on one metric."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["EarlyStopping", "TIES"]

TIES = ("first", "last")


class EarlyStopping:
    """Stop after ``patience`` consecutive evaluations without improvement.

    Args:
        patience: evaluations without improvement that are tolerated (``stopping_step``).
        mode: ``"max"`` when larger is better (recall, accuracy), ``"min"`` for losses.
        ties: ``"first"`` (``best_on_tie``): only a strictly better value improves, so of equal best values
            the first evaluation stays the best. ``"last"``: a value equal to the best also counts as an
            improvement (the ``>=`` / ``<=`` rule): it becomes the best step (the trainer rewrites
            ``best.pt``) and, like any improvement, resets the patience count; so ``bad_steps`` is always
            the number of evaluations since ``best_step``.

    A NaN value never counts as an improvement (nor as a tie).
    """

    def __init__(self, patience: int, mode: str = "max", ties: str = "first") -> None:
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
            raise ValueError(f"patience (stopping_step) must be an int >= 1, got {patience!r}")
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
        if ties not in TIES:
            raise ValueError(f"best_on_tie must be 'first' or 'last', got {ties!r}")
        self.patience = patience
        self.mode = mode
        self.ties = ties
        self.best: float | None = None
        self.bad_steps = 0
        self.steps = 0
        self.best_step: int | None = None

    def _improves(self, value: float) -> bool:
        if math.isnan(value):
            return False
        if self.best is None:
            return True
        if self.ties == "last" and value == self.best:
            return True
        return value > self.best if self.mode == "max" else value < self.best

    def step(self, value: float) -> bool:
        """Record ``value``; return whether it is the new best (with ``ties="last"``, also when it ties)."""
        value = float(value)
        self.steps += 1
        improved = self._improves(value)
        if improved:
            self.best = value
            self.best_step = self.steps
            self.bad_steps = 0
        else:
            self.bad_steps += 1
        return improved

    def reset_patience(self) -> None:
        """Another criterion improved (e.g. one task of several): start the patience count again; the best value
        and its step stay."""
        self.bad_steps = 0

    @property
    def should_stop(self) -> bool:
        return self.bad_steps >= self.patience

    def state_dict(self) -> dict[str, Any]:
        return {"patience": self.patience, "mode": self.mode, "ties": self.ties, "best": self.best,
                "bad_steps": self.bad_steps, "steps": self.steps, "best_step": self.best_step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key in ("mode", "best", "bad_steps", "steps", "best_step"):
            if key not in state:
                raise ValueError(f"EarlyStopping state is missing '{key}'")
        if state["mode"] != self.mode:
            raise ValueError(f"EarlyStopping state has mode '{state['mode']}', this one is '{self.mode}'")
        ties = state.get("ties", "first")   # states saved before best_on_tie existed kept the first
        if ties != self.ties:
            raise ValueError(f"EarlyStopping state has best_on_tie '{ties}', this one is '{self.ties}'")
        self.best = state["best"]
        self.bad_steps = int(state["bad_steps"])
        self.steps = int(state["steps"])
        self.best_step = state["best_step"]
