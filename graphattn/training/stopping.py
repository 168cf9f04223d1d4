"""Early stopping on one metric."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["EarlyStopping"]


class EarlyStopping:
    """Stop after ``patience`` consecutive evaluations without improvement.

    Args:
        patience: evaluations without improvement that are tolerated (``stopping_step``).
        mode: ``"max"`` when larger is better (recall, accuracy), ``"min"`` for losses.

    A NaN value never counts as an improvement.
    """

    def __init__(self, patience: int, mode: str = "max") -> None:
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
            raise ValueError(f"patience (stopping_step) must be an int >= 1, got {patience!r}")
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
        self.patience = patience
        self.mode = mode
        self.best: float | None = None
        self.bad_steps = 0
        self.steps = 0
        self.best_step: int | None = None

    def step(self, value: float) -> bool:
        """Record ``value``; return whether it is a new best."""
        value = float(value)
        self.steps += 1
        improved = not math.isnan(value) and (
            self.best is None or (value > self.best if self.mode == "max" else value < self.best)
        )
        if improved:
            self.best = value
            self.best_step = self.steps
            self.bad_steps = 0
        else:
            self.bad_steps += 1
        return improved

    @property
    def should_stop(self) -> bool:
        return self.bad_steps >= self.patience

    def state_dict(self) -> dict[str, Any]:
        return {"patience": self.patience, "mode": self.mode, "best": self.best, "bad_steps": self.bad_steps, "steps": self.steps, "best_step": self.best_step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key in ("mode", "best", "bad_steps", "steps", "best_step"):
            if key not in state:
                raise ValueError(f"EarlyStopping state is missing '{key}'")
        if state["mode"] != self.mode:
            raise ValueError(f"EarlyStopping state has mode '{state['mode']}', this one is '{self.mode}'")
        self.best = state["best"]
        self.bad_steps = int(state["bad_steps"])
        self.steps = int(state["steps"])
        self.best_step = state["best_step"]
