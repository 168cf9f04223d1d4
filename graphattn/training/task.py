"""What a domain gives the :class:`~graphattn.training.Trainer`: a :class:`Task`.

A task owns its data and everything that is particular to one kind of learning problem: the batches of
each training phase, the loss of a batch, the evaluation of a split and the metric that judges a model.
The Trainer owns everything a run does the same way everywhere (seeding, device, optimiser and schedule,
epochs, evaluation every ``eval_step``, early stopping, checkpoints and resume, the run folder, progress).

The smallest task implements :meth:`load_data`, :meth:`batches`, :meth:`loss` and :meth:`evaluate`::

    class Regression(Task):
        def load_data(self, config):
            return make_tensors(config)
        def batches(self, phase):
            return torch.split(self.data.train, self.config["train_batch_size"])
        def loss(self, model, batch, phase):
            loss = F.mse_loss(model(batch[:, :-1]), batch[:, -1])
            return loss, {}
        def evaluate(self, model, split):
            return {"mse": ...}
        metric = "mse"
        mode = "min"

Several phases per epoch (KGAT's CF then KG phase, each with its own optimiser) are the task's
``phases`` and :meth:`optimizers`; hooks between epochs (KGAT's attention refresh) go in :meth:`end_epoch`;
random generators the task holds (negative samplers, shuffling) go in :meth:`state_dict` so that a resumed
run continues exactly as an uninterrupted one.

Under ``torchrun`` (several processes, :mod:`graphattn.training.distributed`) the Trainer averages the gradients
of the ranks; a task that wants the speed-up gives each rank its share of every batch from :meth:`batches` and
may shard :meth:`evaluate` (``recsys.task.RecTask`` does both). A task that does neither is not faster: every rank
draws its batches from the same seeded generators, i.e. the batches one process would, and averages equal gradients.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from graphattn.registry import get_model

from .optim import build_optimizer

__all__ = ["Task", "SizedBatches"]


class Task:
    """Base class of a domain's task (see the module docstring).

    Attributes a subclass may set:
        phases: names of the training phases run in order every epoch (default one phase, ``"train"``).
        model_base: the class every model of this task subclasses (checked by :meth:`build_model`).
        valid_split: the split that early stopping and model selection look at.
        fused_optimizer: whether the default :meth:`optimizers` uses the fused Adam / AdamW kernel (faster,
            rounds differently; ``False`` repeats figures made with torch's default kernel bit for bit).
    """

    phases: tuple[str, ...] = ("train",)
    model_base: type = nn.Module
    valid_split: str = "valid"
    fused_optimizer: bool = True

    def __init__(self, config: Mapping[str, Any], data: Any = None) -> None:
        self.config = config
        self.data = self.load_data(config) if data is None else data
        self.device = torch.device("cpu")

    # ------------------------------------------------------------------ required

    def load_data(self, config: Mapping[str, Any]) -> Any:
        """The dataset named by ``config["dataset"]``."""
        raise NotImplementedError(f"{type(self).__name__} must define load_data(config)")

    def batches(self, phase: str) -> Iterable[Any]:
        """The training batches of ``phase`` for one epoch (tensors, or dicts / tuples of tensors, on the CPU
        or already on ``self.device``). A sized iterable lets progress bars and LR schedules know the epoch length."""
        raise NotImplementedError(f"{type(self).__name__} must define batches(phase)")

    def loss(self, model: nn.Module, batch: Any, phase: str) -> tuple[Tensor, dict[str, float]]:
        """``(loss, parts)``: the scalar to minimise and named float parts logged per epoch."""
        raise NotImplementedError(f"{type(self).__name__} must define loss(model, batch, phase)")

    def evaluate(self, model: nn.Module, split: str) -> dict[str, float]:
        """Metrics of ``model`` on ``split`` (``"valid"`` or ``"test"``); called in eval mode without gradients."""
        raise NotImplementedError(f"{type(self).__name__} must define evaluate(model, split)")

    # ------------------------------------------------------------------ the judging metric

    @property
    def metric(self) -> str:
        """The validation metric that picks the best epoch and drives early stopping."""
        return str(self.config["valid_metric"])

    @property
    def mode(self) -> str:
        """``"max"`` when a larger :attr:`metric` is better, ``"min"`` otherwise."""
        return "max"

    def metric_names(self) -> list[str] | None:
        """The names :meth:`evaluate` will return, when known before training (lets a mistyped
        ``valid_metric`` fail at once instead of after the first epoch); ``None`` when not known."""
        return None

    # ------------------------------------------------------------------ optional hooks

    def build_model(self) -> nn.Module:
        """``Model(config, data)`` for the registered ``config["model"]``."""
        cls = get_model(self.config["model"])
        model = cls(self.config, self.data)
        if not isinstance(model, self.model_base):
            raise TypeError(f"model '{self.config['model']}' is a {type(model).__name__}; models of this task "
                            f"subclass {self.model_base.__module__}.{self.model_base.__qualname__}")
        return model

    def setup(self, model: nn.Module, device: torch.device) -> None:
        """Called once the model is on ``device``, before the optimisers are built (samplers, device copies)."""
        self.device = device

    def optimizers(self, model: nn.Module) -> dict[str, torch.optim.Optimizer]:
        """One optimiser per phase; the default is a single one from the config keys, shared by all phases."""
        opt = build_optimizer(self.config, model.parameters(), fused=self.fused_optimizer)
        return {phase: opt for phase in self.phases}

    def end_epoch(self, model: nn.Module) -> None:
        """After the training phases of every epoch (still in training mode)."""

    def describe(self) -> str:
        """One line about the data, logged at the start of a run."""
        return str(self.data)

    def state_dict(self) -> dict[str, Any]:
        """What the task must restore to continue exactly (random generators of samplers, ...)."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Inverse of :meth:`state_dict`."""


class SizedBatches:
    """An iterable of batches with a known length (for progress bars and per-step LR schedules)."""

    def __init__(self, batches: Iterable[Any], length: int) -> None:
        self.batches, self.length = batches, int(length)

    def __len__(self) -> int:
        return self.length

    def __iter__(self):
        return iter(self.batches)
