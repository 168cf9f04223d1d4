"""The one training loop: every model of every domain is trained by :class:`Trainer` over a :class:`Task`.

Per epoch (numbered from 1): each of the task's phases in order, one optimiser step per batch (with
gradient clipping and the LR schedule), then the task's ``end_epoch`` hook. Every ``eval_step`` epochs
and after the last one the validation split is evaluated; the best epoch by the task's metric goes to
``best.pt``; ``last.pt`` after every epoch holds everything a resumed run needs to continue exactly
(model, optimisers, schedules, early stopping, counters, the task's samplers and the global random
generators). After early stopping or the last epoch the best weights are reloaded and tested.

Config keys (defaults in ``graphattn/overall.yaml``): epochs, eval_step, stopping_step, best_on_tie, optimizer,
learning_rate, weight_decay, momentum, scheduler, warmup_epochs, grad_clip, show_progress, device, resume,
log_tensorboard.

TensorBoard (``log_tensorboard: true``): every epoch's losses (``train/<name>``), learning rate (``learning_rate``),
every evaluation metric (``<split>/<metric>``, e.g. ``valid/recall@20``) and the test metrics (``test/<metric>`` at
the best epoch) are also written as scalars, x = epoch, into the run folder (``tensorboard --logdir saved``); a
resumed run purges the events its predecessor wrote after the epoch it resumes from.

Several processes (``torchrun``; :mod:`graphattn.training.distributed`): when a process group is initialised, the
loss of every step goes through :class:`~torch.nn.parallel.DistributedDataParallel`, which averages the
gradients over the ranks; the task splits each batch between the ranks and may shard its evaluation. The
logged losses are averaged over the ranks, the model's persistent buffers (KGAT's attention matrix) are
rank 0's after every ``end_epoch``, and only rank 0 saves checkpoints, shows progress and reads the checkpoint
to resume from (and the best one to test), which it sends to the others.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from graphattn.registry import get_model, get_task

from . import distributed
from .optim import StepSchedule
from .report import progress
from .rundir import MemoryRun, RunDir, find_checkpoint, load_checkpoint
from .runtime import capture_rng_state, resolve_device, restore_rng_state, seed_everything
from .stopping import EarlyStopping
from .task import Task

__all__ = ["Trainer", "move_to"]


def move_to(batch: Any, device: torch.device) -> Any:
    """``batch`` with every tensor on ``device`` (tensors, dicts, lists, tuples, namedtuples, PyG data)."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: move_to(v, device) for k, v in batch.items()}
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):
        return type(batch)(*(move_to(v, device) for v in batch))
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_to(v, device) for v in batch)
    if hasattr(batch, "to") and callable(batch.to):
        return batch.to(device)
    return batch


# DDP's switch for broadcasting buffers before every forward (renamed in torch 2.13; torch >= 2.3 is supported)
_NO_BUFFER_SYNC = ({"forward_sync_buffers": False}
                   if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
                   else {"broadcast_buffers": False})


class _TaskLoss(nn.Module):
    """``task.loss`` as a module's forward, so that DistributedDataParallel sees every step's loss."""

    def __init__(self, task: Task, model: nn.Module) -> None:
        super().__init__()
        self.task, self.model = task, model

    def forward(self, batch: Any, phase: str) -> tuple[torch.Tensor, dict[str, float]]:
        return self.task.loss(self.model, batch, phase)


def _positive_int(config: Mapping[str, Any], key: str) -> int:
    value = config[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{key}: expected an int >= 1, got {value!r}")
    return value


class Trainer:
    """Train ``model`` on ``task`` as the config says; :meth:`fit` returns the best epoch's test metrics.

    Args:
        config: the merged config (a :class:`graphattn.config.Config` or a mapping with the keys above).
        task: the domain's task, holding the data.
        model: the model; ``None`` builds ``task.build_model()``.
        run: the run folder; ``None`` keeps history and checkpoints in memory (:class:`MemoryRun`).
        device: overrides ``config["device"]``.

    After :meth:`fit`: ``history`` (the run's train / evaluation rows), ``best_epoch``, ``model`` holding the
    best epoch's weights.
    """

    def __init__(self, config: Mapping[str, Any], task: Task, model: nn.Module | None = None,
                 run: RunDir | None = None, device: str | torch.device | None = None) -> None:
        self.config = config
        self.task = task
        self.run = MemoryRun() if run is None else run
        self.log = self.run.logger
        self.epochs = _positive_int(config, "epochs")
        self.eval_step = _positive_int(config, "eval_step")
        self.grad_clip = float(config["grad_clip"])
        self.show_progress = bool(config["show_progress"]) and distributed.is_main()
        self.device = resolve_device(config["device"] if device is None else device)
        self.stopper = EarlyStopping(config["stopping_step"], mode=task.mode, ties=config["best_on_tie"])
        names = task.metric_names()
        if names is not None and task.metric not in names:
            raise ValueError(f"valid_metric: '{task.metric}' is not computed by this run; choose one of {sorted(names)}")

        self.model = (task.build_model() if model is None else model).to(self.device)
        task.setup(self.model, self.device)
        self.optimizers = task.optimizers(self.model)
        missing = [p for p in task.phases if p not in self.optimizers]
        if missing:
            raise ValueError(f"{type(task).__name__}.optimizers() gives none for phase(s) {missing}")
        self.schedules: dict[str, StepSchedule] = {}
        for phase in task.phases:
            opt = self.optimizers[phase]
            if not any(s.optimizer is opt for s in self.schedules.values()):
                self.schedules[phase] = StepSchedule(opt, config["scheduler"], self.epochs, config["warmup_epochs"])
        self._ddp: DistributedDataParallel | None = None
        if distributed.is_distributed():
            # find_unused_parameters: a phase may train a subset (KGAT's TransR phase leaves the aggregators alone);
            # buffers are synchronised once per epoch (after end_epoch), not at every step
            self._ddp = DistributedDataParallel(_TaskLoss(task, self.model), find_unused_parameters=True,
                                                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                                                **_NO_BUFFER_SYNC)
        self.epoch = 0          # completed epochs
        self.step = 0           # optimiser steps taken
        self.best_epoch: int | None = None
        # TensorBoard event file in the run folder (log_tensorboard; rank 0 only), opened at the first scalar
        self.log_tensorboard = bool(config.get("log_tensorboard", False))
        self._tensorboard = None
        if self.log_tensorboard:
            try:   # fail before the first epoch, not after it
                import torch.utils.tensorboard  # noqa: F401
            except ImportError as exc:
                raise ValueError(f"log_tensorboard: true needs the tensorboard package (pip install tensorboard): "
                                 f"{exc}") from None
        # optional callback(epoch, metrics) after each validation evaluation (a search's pruner); it may raise to stop
        self.on_evaluation: Callable[[int, dict[str, float]], None] | None = None

    @classmethod
    def from_config(cls, config: Mapping[str, Any], run: RunDir | None = None) -> Trainer:
        """The registered task of ``config["model"]``, its data and model, ready to :meth:`fit`.

        Seeds every generator from ``config["seed"]`` first. With ``config["resume"]`` set, the state of that
        run's ``last.pt`` is restored.
        """
        seed_everything(config["seed"], config["reproducibility"])
        task_cls = get_task(get_model(config["model"]).task).task
        trainer = cls(config, task_cls(config), run=run)
        trainer.log.info("dataset %s", trainer.task.describe())
        n_params = sum(p.numel() for p in trainer.model.parameters())
        trainer.log.info("model %s: %d parameters on %s", config["model"], n_params, trainer.device)
        if config["resume"]:
            trainer.resume(config["resume"])
        return trainer

    @property
    def history(self) -> dict[str, Any]:
        return self.run.history

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs (tensors, numbers, strings, lists and dicts only)."""
        return {
            "model": self.model.state_dict(),
            "optimizers": {phase: opt.state_dict() for phase, opt in self.optimizers.items()},
            "schedules": {phase: s.state_dict() for phase, s in self.schedules.items()},
            "stopper": self.stopper.state_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "best_epoch": self.best_epoch,
            "task": self.task.state_dict(),
            "rng": capture_rng_state(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for key in ("model", "optimizers", "schedules", "stopper", "epoch", "step", "task", "rng"):
            if key not in state:
                raise ValueError(f"checkpoint is missing '{key}': not a last.pt written by this Trainer")
        self.model.load_state_dict(state["model"])
        for phase, opt in self.optimizers.items():
            if phase not in state["optimizers"]:
                raise ValueError(f"checkpoint has no optimizer state for phase '{phase}' (it has {sorted(state['optimizers'])})")
            opt.load_state_dict(state["optimizers"][phase])
        for phase, schedule in self.schedules.items():
            schedule.load_state_dict(state["schedules"][phase])
        self.stopper.load_state_dict(state["stopper"])
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        self.best_epoch = state.get("best_epoch")
        self.task.load_state_dict(state["task"])
        restore_rng_state(state["rng"])

    def resume(self, path: str | Any) -> None:
        """Continue from a run folder's ``last.pt`` (or a given checkpoint file).

        With several processes only rank 0 reads it (``path`` need not exist elsewhere) and sends it to the others.
        """
        state, checkpoint = None, path
        if distributed.is_main():
            checkpoint = find_checkpoint(path)
            state = load_checkpoint(checkpoint)
        try:
            self.load_state_dict(distributed.broadcast_object(state))
        except (RuntimeError, KeyError) as exc:   # torch's size-mismatch / missing-key errors: a user error here
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ValueError(f"checkpoint '{checkpoint}' does not fit this model and dataset "
                             f"({type(self.model).__name__}): {first}") from None
        # a run killed after writing metrics.json but before last.pt recorded epochs that will now be replayed
        history = self.run.history
        for key in ("train", "evaluations"):
            history[key] = [row for row in history.get(key, []) if int(row.get("epoch", 0)) <= self.epoch]
        history["test"] = {}
        self.log.info("resumed from %s after epoch %d", checkpoint, self.epoch)

    # ------------------------------------------------------------------ the loop

    def train_step(self, phase: str, batch: Any) -> tuple[float, dict[str, float]]:
        """One optimiser step of ``phase`` on ``batch`` (this rank's share of it); returns the loss and its parts."""
        opt = self.optimizers[phase]
        schedule = next(s for s in self.schedules.values() if s.optimizer is opt)
        batch = move_to(batch, self.device)
        loss, parts = self.task.loss(self.model, batch, phase) if self._ddp is None else self._ddp(batch, phase)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"epoch {self.epoch + 1} {phase}: the loss is {loss.item()}; lower learning_rate "
                                     "or set grad_clip")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        opt.step()
        schedule.step()
        self.step += 1
        return loss.item(), parts

    def train_epoch(self) -> dict[str, float]:
        """One epoch of every phase, then the task's ``end_epoch``; returns the logged losses and times."""
        self.model.train()
        epoch = self.epoch + 1
        logs: dict[str, float] = {}
        single = tuple(self.task.phases) == ("train",)
        batches_of = {phase: self.task.batches(phase) for phase in self.task.phases}
        length = {phase: (len(b) if hasattr(b, "__len__") else None) for phase, b in batches_of.items()}
        for schedule in self.schedules.values():
            lengths = [length[p] for p in self.task.phases if self.optimizers[p] is schedule.optimizer]
            schedule.start_epoch(None if None in lengths else sum(lengths))
        for phase in self.task.phases:
            batches, n_batches = batches_of[phase], length[phase]
            t0, total, n, parts_sum = time.perf_counter(), 0.0, 0, {}
            desc = f"epoch {epoch}" if single else f"epoch {epoch} {phase}"
            for batch in progress(batches, desc=desc, enabled=self.show_progress, total=n_batches):
                loss, parts = self.train_step(phase, batch)
                total += loss
                n += 1
                for k, v in parts.items():
                    parts_sum[k] = parts_sum.get(k, 0.0) + float(v)
            if distributed.is_distributed():   # the ranks' mean losses of equal shares average to the batch's
                keys = sorted(parts_sum)
                total, n, *sums = distributed.all_reduce_sum([total, n] + [parts_sum[k] for k in keys], self.device)
                parts_sum = dict(zip(keys, sums))
            prefix = "" if single else f"{phase}_"
            logs[f"{prefix}loss"] = total / max(n, 1)
            logs.update({f"{prefix}{k}": v / max(n, 1) for k, v in parts_sum.items()})
            logs[f"{prefix}seconds"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        self.task.end_epoch(self.model)
        distributed.broadcast_buffers(self.model)   # every rank continues with rank 0's (e.g. KGAT's attention)
        logs["epoch_end_seconds"] = time.perf_counter() - t0
        logs["lr"] = next(iter(self.optimizers.values())).param_groups[0]["lr"]
        self.epoch = epoch
        return logs

    @torch.no_grad()
    def evaluate(self, split: str) -> dict[str, float]:
        """The task's metrics of the current model on ``split``."""
        self.model.eval()
        return self.task.evaluate(self.model, split)

    def train(self) -> None:
        """Epochs from the current one to ``epochs`` or early stopping; checkpoints after every epoch.

        Ctrl-C leaves the last complete epoch in ``last.pt`` and re-raises ``KeyboardInterrupt`` after
        saying how to resume.
        """
        metric, split = self.task.metric, self.task.valid_split
        try:
            while self.epoch < self.epochs and not self.stopper.should_stop:
                logs = self.train_epoch()
                epoch = self.epoch
                self.run.log_train(epoch, **logs)
                self._scalars("train", logs, epoch)
                if epoch % self.eval_step == 0 or epoch == self.epochs:
                    t0 = time.perf_counter()
                    result = self.evaluate(split)
                    result["eval_seconds"] = time.perf_counter() - t0
                    if metric not in result:
                        raise ValueError(f"valid_metric '{metric}' is not computed; available: {sorted(result)}")
                    self.run.log_metrics(epoch, split, result)
                    self._scalars(split, result, epoch)
                    if self.stopper.step(result[metric]):
                        self.best_epoch = epoch
                        if distributed.is_main():
                            self.run.save_checkpoint({"model": self.model.state_dict(), "epoch": epoch,
                                                      "metric": metric, "value": float(result[metric])}, "best.pt")
                    if self.on_evaluation is not None:
                        self.on_evaluation(epoch, result)
                if distributed.is_main():
                    self.run.save_checkpoint(self.state_dict(), "last.pt")
                if self.stopper.should_stop:
                    self.log.info("early stop after epoch %d: %s did not improve for %d evaluations", epoch,
                                  metric, self.stopper.patience)
        except KeyboardInterrupt:
            where = f"; continue with --resume={self.run.path}" if self.run.path is not None else ""
            self.log.warning("interrupted during epoch %d; last.pt holds epoch %d%s", self.epoch + 1, self.epoch, where)
            raise

    def test(self) -> dict[str, float]:
        """Reload the best epoch (when one was saved), evaluate the test split, record and return it."""
        best = self.run.load("best.pt") if distributed.is_main() and self.run.has("best.pt") else None
        best = distributed.broadcast_object(best)
        if best is not None:
            self.model.load_state_dict(best["model"])
            self.best_epoch = int(best["epoch"])
            self.log.info("testing the best epoch %d (%s = %.4f)", best["epoch"], best["metric"], best["value"])
        result = self.evaluate("test")
        self.run.log_test(result)
        self._scalars("test", result, self.best_epoch if self.best_epoch is not None else self.epoch)
        self.run.plot_curves()
        return result

    def fit(self) -> dict[str, float]:
        """:meth:`train`, then :meth:`test`; returns the test metrics of the best epoch."""
        try:
            self.train()
            return self.test()
        finally:
            self.close()

    # ------------------------------------------------------------------ TensorBoard

    def _scalars(self, prefix: str, values: Mapping[str, Any], step: int) -> None:
        """Write the numbers of ``values`` as TensorBoard scalars ``<prefix>/<name>`` at ``step`` (when
        ``log_tensorboard`` is on, on rank 0, for a run with a folder); the learning rate as ``learning_rate``."""
        if not self.log_tensorboard or self.run.path is None or not distributed.is_main():
            return
        if self._tensorboard is None:
            from torch.utils.tensorboard import SummaryWriter   # needs the tensorboard package (setup.py)

            # resumed after epoch N: hide what an interrupted predecessor wrote for epochs > N
            self._tensorboard = SummaryWriter(log_dir=str(self.run.path),
                                              purge_step=step if step > 1 and prefix == "train" else None)
        for name, value in values.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            tag = "learning_rate" if prefix == "train" and name == "lr" else f"{prefix}/{name}"
            self._tensorboard.add_scalar(tag, float(value), int(step))
        self._tensorboard.flush()

    def close(self) -> None:
        """Close the TensorBoard event file, if one is open (:meth:`fit` does this at its end)."""
        if self._tensorboard is not None:
            self._tensorboard.close()
            self._tensorboard = None
