"""Optimisers and learning-rate schedules from config keys.

Keys (defaults in ``graphattn/overall.yaml``): ``optimizer`` (adam | adamw | sgd), ``learning_rate``,
``weight_decay``, ``momentum`` (sgd), ``scheduler`` (none | cosine | onecycle), ``warmup_epochs``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import torch

__all__ = ["OPTIMIZERS", "SCHEDULERS", "build_optimizer", "lr_factor", "one_cycle", "StepSchedule"]

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULERS = ("none", "cosine", "onecycle")

# the defaults of torch.optim.lr_scheduler.OneCycleLR, which the ``onecycle`` schedule reproduces
ONECYCLE_PCT_START = 0.3
ONECYCLE_DIV_FACTOR = 25.0
ONECYCLE_FINAL_DIV_FACTOR = 1e4
ONECYCLE_BASE_MOMENTUM = 0.85
ONECYCLE_MAX_MOMENTUM = 0.95


def build_optimizer(config: Mapping[str, Any], params: Iterable[torch.nn.Parameter], lr: float | None = None,
                    weight_decay: float | None = None, fused: bool = True) -> torch.optim.Optimizer:
    """The optimiser named by ``config["optimizer"]`` over the parameters that require a gradient.

    Adam and AdamW use the fused kernel where this torch has one (the same update rule; on CPU several
    times faster over large embedding tables; it rounds differently, so ``fused=False`` gives torch's default
    kernel where earlier figures must repeat bit for bit). ``lr`` and ``weight_decay`` override the config's values.
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
    if not fused:
        return cls(params, lr=lr, weight_decay=wd)
    try:
        return cls(params, lr=lr, weight_decay=wd, fused=True)
    except (RuntimeError, TypeError):
        return cls(params, lr=lr, weight_decay=wd)


def _check_kind(kind: str) -> None:
    if kind not in SCHEDULERS:
        raise ValueError(f"scheduler: expected one of {', '.join(SCHEDULERS)}, got {kind!r}")


def lr_factor(step: int, total_steps: int, warmup_steps: int, kind: str) -> float:
    """Multiplier of the base learning rate at optimiser step ``step`` (0-based).

    Linear warm-up ``(step + 1) / warmup_steps`` for the first ``warmup_steps`` steps, then 1 (``none``) or a
    cosine from 1 down to 0 at ``total_steps`` (``cosine``). ``onecycle`` is :func:`one_cycle`.
    """
    _check_kind(kind)
    if kind == "onecycle":
        raise ValueError("scheduler 'onecycle' sets the learning rate and the momentum, not a factor: use one_cycle()")
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if kind == "none":
        return 1.0
    span = max(1, total_steps - warmup_steps)
    done = min(1.0, (step - warmup_steps) / span)
    return 0.5 * (1.0 + math.cos(math.pi * done))


def _anneal_cos(start: float, end: float, pct: float) -> float:
    return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)


def one_cycle(step: int, total_steps: int, pct_start: float, max_lr: float) -> tuple[float, float]:
    """``(learning rate, momentum)`` at optimiser step ``step`` (0-based) of ``torch.optim.lr_scheduler.OneCycleLR``
    with its defaults: cosine from ``max_lr / 25`` up to ``max_lr`` over the first ``pct_start`` of the
    ``total_steps``, then down to ``max_lr / 25 / 1e4`` at the last step; the momentum the other way,
    0.95 -> 0.85 -> 0.95. The same floating-point operations as torch, so the values are equal bit for bit.
    """
    if not 0.0 <= pct_start < 1.0:
        raise ValueError(f"onecycle: pct_start must be in [0, 1), got {pct_start!r}")
    if step > total_steps:
        raise ValueError(f"onecycle: step {step} is past the schedule's {total_steps} steps")
    initial_lr = max_lr / ONECYCLE_DIV_FACTOR
    min_lr = initial_lr / ONECYCLE_FINAL_DIV_FACTOR
    warm_end = float(pct_start * total_steps) - 1
    if step <= warm_end:
        if warm_end == 0:
            raise ValueError(f"onecycle: a warm-up of pct_start {pct_start} x {total_steps} steps = 1 step has no length; "
                             "change pct_start (warmup_epochs) or the number of steps")
        pct = (step - 0.0) / (warm_end - 0.0)  # torch's (step - start) / (end - start), start 0.0
        return (_anneal_cos(initial_lr, max_lr, pct),
                _anneal_cos(ONECYCLE_MAX_MOMENTUM, ONECYCLE_BASE_MOMENTUM, pct))
    pct = (step - warm_end) / (total_steps - 1 - warm_end)
    return _anneal_cos(max_lr, min_lr, pct), _anneal_cos(ONECYCLE_BASE_MOMENTUM, ONECYCLE_MAX_MOMENTUM, pct)


class StepSchedule:
    """Per-step schedule of one optimiser, with the epoch length known at each epoch's start.

    ``none`` and ``cosine`` multiply the optimiser's learning rates by :func:`lr_factor`; ``onecycle`` sets
    them (the optimiser's learning rate is the peak) and the momentum (Adam / AdamW ``betas[0]``, SGD
    ``momentum``) by :func:`one_cycle`, as ``torch.optim.lr_scheduler.OneCycleLR`` with its defaults does.
    Its warm-up fraction ``pct_start`` is the argument when given, else ``warmup_epochs / epochs``, else 0.3
    (torch's default); it is an attribute that may be changed before training.

    The trainer calls :meth:`start_epoch` with the number of batches of the coming epoch (which may only be
    known then) and :meth:`step` after each optimiser step. The state is the step counter and the base
    learning rates (and ``pct_start`` for ``onecycle``).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, kind: str, epochs: int, warmup_epochs: int,
                 pct_start: float | None = None) -> None:
        _check_kind(kind)  # an unknown name fails before training
        self.kind, self.epochs, self.warmup_epochs = kind, int(epochs), int(warmup_epochs)
        self.steps_per_epoch = 0
        self.optimizer = optimizer
        self.base_lrs = [group["lr"] for group in optimizer.param_groups]
        self.last_step = 0
        self.pct_start = None
        if kind == "onecycle":
            if pct_start is None:
                pct_start = self.warmup_epochs / self.epochs if self.warmup_epochs > 0 else ONECYCLE_PCT_START
            self.pct_start = float(pct_start)
            if not 0.0 <= self.pct_start < 1.0:
                raise ValueError(f"onecycle: pct_start (warmup_epochs / epochs) must be in [0, 1), got {self.pct_start!r}")
            if "betas" in optimizer.defaults:
                self.momentum_key = "betas"
            elif "momentum" in optimizer.defaults:
                self.momentum_key = "momentum"
            else:
                raise ValueError(f"scheduler 'onecycle' cycles the momentum, which {type(optimizer).__name__} does not have")

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
        total = self.epochs * self.steps_per_epoch
        if self.kind == "onecycle":
            for group, base in zip(self.optimizer.param_groups, self.base_lrs):
                group["lr"], momentum = one_cycle(self.last_step, total, self.pct_start, base)
                if self.momentum_key == "betas":
                    group["betas"] = (momentum, *group["betas"][1:])
                else:
                    group["momentum"] = momentum
            return
        factor = lr_factor(self.last_step, total, self.warmup_epochs * self.steps_per_epoch, self.kind)
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base * factor

    def state_dict(self) -> dict[str, Any]:
        state = {"last_step": self.last_step, "base_lrs": list(self.base_lrs)}
        if self.kind == "onecycle":
            state["pct_start"] = self.pct_start
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.last_step = int(state["last_step"])
        self.base_lrs = [float(x) for x in state["base_lrs"]]
        if self.kind == "onecycle" and "pct_start" in state:
            self.pct_start = float(state["pct_start"])
