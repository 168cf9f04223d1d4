"""Optimisers and learning-rate schedules from config keys.

Keys (defaults in ``graphattn/overall.yaml``): ``optimizer`` (adam | adamw | sgd), ``learning_rate``,
``weight_decay``, ``momentum`` (sgd), ``scheduler`` (none | cosine), ``warmup_epochs``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import torch

__all__ = ["OPTIMIZERS", "SCHEDULERS", "build_optimizer", "lr_factor", "StepSchedule"]

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULERS = ("none", "cosine")


def build_optimizer(config: Mapping[str, Any], params: Iterable[torch.nn.Parameter], lr: float | None = None,
                    weight_decay: float | None = None) -> torch.optim.Optimizer:
    """The optimiser named by ``config["optimizer"]`` over the parameters that require a gradient.

    Adam and AdamW use the fused kernel where this torch has one (the same update rule; on CPU several
    times faster over large embedding tables). ``lr`` and ``weight_decay`` override the config's values.
    """
    params = [p for p in params if p.requires_grad]
    name = config["optimizer"]
    lr = float(config["learning_rate"] if lr is None else lr)
    wd = float(config["weight_decay"] if weight_decay is None else weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=wd, momentum=float(config["momentum"]))
    if name not in ("adam", "adamw"):
        raise ValueError(f"optimizer: expected one of {', '.join(OPTIMIZERS)}, got {name!r}")
    cls = torch.optim.Adam if name == "adam" else torch.optim.AdamW
    try:
        return cls(params, lr=lr, weight_decay=wd, fused=True)
    except (RuntimeError, TypeError):
        return cls(params, lr=lr, weight_decay=wd)


def lr_factor(step: int, total_steps: int, warmup_steps: int, kind: str) -> float:
    """Multiplier of the base learning rate at optimiser step ``step`` (0-based).

    Linear warm-up ``(step + 1) / warmup_steps`` for the first ``warmup_steps`` steps, then 1 (``none``) or a
    cosine from 1 down to 0 at ``total_steps`` (``cosine``).
    """
    if kind not in SCHEDULERS:
        raise ValueError(f"scheduler: expected one of {', '.join(SCHEDULERS)}, got {kind!r}")
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if kind == "none":
        return 1.0
    span = max(1, total_steps - warmup_steps)
    done = min(1.0, (step - warmup_steps) / span)
    return 0.5 * (1.0 + math.cos(math.pi * done))


class StepSchedule:
    """Per-step schedule of one optimiser: ``lr_factor`` with the epoch length known at each epoch's start.

    The trainer calls :meth:`start_epoch` with the number of batches of the coming epoch (which may only be
    known then) and :meth:`step` after each optimiser step. The state is the step counter alone.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, kind: str, epochs: int, warmup_epochs: int) -> None:
        lr_factor(0, 1, 0, kind)  # an unknown name fails before training
        self.kind, self.epochs, self.warmup_epochs = kind, int(epochs), int(warmup_epochs)
        self.steps_per_epoch = 0
        self.optimizer = optimizer
        self.base_lrs = [group["lr"] for group in optimizer.param_groups]
        self.last_step = 0

    @property
    def active(self) -> bool:
        return self.kind != "none" or self.warmup_epochs > 0

    def start_epoch(self, steps_per_epoch: int | None) -> None:
        if not self.active:
            return
        if steps_per_epoch is None:
            raise ValueError(f"scheduler '{self.kind}' with warmup_epochs {self.warmup_epochs} needs the number of "
                             "batches per epoch, but this task's batches have no len(); use scheduler: none")
        self.steps_per_epoch = int(steps_per_epoch)
        self._apply()

    def step(self) -> None:
        if self.active:
            self.last_step += 1
            self._apply()

    def _apply(self) -> None:
        factor = lr_factor(self.last_step, self.epochs * self.steps_per_epoch,
                           self.warmup_epochs * self.steps_per_epoch, self.kind)
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base * factor

    def state_dict(self) -> dict[str, Any]:
        return {"last_step": self.last_step, "base_lrs": list(self.base_lrs)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.last_step = int(state["last_step"])
        self.base_lrs = [float(x) for x in state["base_lrs"]]

