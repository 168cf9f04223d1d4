"""Trainer of the ``multitask`` task: summed BCE, AUC and user-grouped gAUC per task.

``train_multitask(config, run)`` is what ``run.py`` calls; :func:`fit` trains a given model on a given
dataset (experiment scripts use it to share one dataset between models). Model selection: the checkpoint
with the best validation ``valid_metric`` (default ``mean_auc``), early stopping after ``stopping_step``
evaluations without improvement; the returned metrics are that checkpoint's test metrics.
"""
from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from graphattn.registry import get_dataset, get_model
from graphattn.train import (EarlyStopping, RunDir, capture_rng_state, load_checkpoint, progress,
                             resolve_device, restore_rng_state)

from .base import MultiTaskModel
from .data import MultiTaskData, MultiTaskSplit, iterate_batches, load_csv_dir_config
from .metrics import multitask_metrics

__all__ = ["train_multitask", "fit", "evaluate", "load_data"]


def load_data(config: Mapping[str, Any]) -> MultiTaskData:
    """The dataset named by ``config['dataset']``: a registered name or a CSV folder."""
    entry = get_dataset(config["dataset"], "multitask")
    if entry.is_path:
        return load_csv_dir_config(entry.name, config)
    data = entry.loader(config)
    if not isinstance(data, MultiTaskData):
        raise TypeError(f"dataset loader of {entry.name!r} returned {type(data).__name__}, expected MultiTaskData")
    return data


@torch.no_grad()
def evaluate(model: MultiTaskModel, split: MultiTaskSplit, tasks: list[str], batch_size: int,
             device: torch.device | str = "cpu") -> dict[str, float]:
    """Per-task AUC / gAUC (and their means) of ``model`` on ``split``."""
    model.eval()
    scores = []
    for batch in iterate_batches(split, batch_size):
        batch = _to(batch, device)
        scores.append(model.predict(batch).float().cpu())
    pred = torch.cat(scores).numpy() if scores else np.zeros((0, len(tasks)))
    return multitask_metrics(split.labels.cpu().numpy(), pred, split.user.cpu().numpy(), tasks)


def _to(batch: dict[str, Any], device: torch.device | str) -> dict[str, Any]:
    return {k: ([t.to(device) for t in v] if isinstance(v, list) else v.to(device)) for k, v in batch.items()}


def fit(model: MultiTaskModel, data: MultiTaskData, config: Mapping[str, Any], run: RunDir | None = None,
        device: torch.device | str = "cpu", history: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Train ``model`` on ``data.train``, select on ``data.valid``, return test metrics of the best epoch.

    Config keys: epochs, learning_rate, weight_decay, train_batch_size, eval_batch_size, eval_step,
    stopping_step, valid_metric, show_progress, seed. With a ``run`` folder, losses, validation metrics and
    test metrics are logged, ``best.pt`` / ``last.pt`` saved, and a ``last.pt`` already there is resumed.
    ``history``, when given, receives one dict per evaluation: ``epoch``, ``loss`` (mean training loss of the
    epoch) and the validation metrics (learning curves per task without a run folder).
    """
    model.to(device)
    # the splits are small next to the model's activations: keep them on the device for the whole run
    train, valid_split, test_split = data.train.to(device), data.valid.to(device), data.test.to(device)
    metric = str(config["valid_metric"])
    opt = torch.optim.Adam(model.parameters(), lr=float(config["learning_rate"]),
                           weight_decay=float(config["weight_decay"]))
    stopper = EarlyStopping(int(config["stopping_step"]), mode="max")
    gen = torch.Generator().manual_seed(int(config["seed"]))
    start, best_state = 0, None
    if run is not None and (run.path / "last.pt").is_file():
        state = load_checkpoint(run.path / "last.pt")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        stopper.load_state_dict(state["early_stopping"])
        gen.set_state(state["generator"])
        restore_rng_state(state["rng"])
        start = int(state["epoch"]) + 1
        run.logger.info("resumed from %s at epoch %d", run.path / "last.pt", start)
    if run is not None and (run.path / "best.pt").is_file():
        best_state = load_checkpoint(run.path / "best.pt")["model"]
    bs, ebs = int(config["train_batch_size"]), int(config["eval_batch_size"])
    eval_step = max(1, int(config["eval_step"]))
    show = bool(config["show_progress"])
    for epoch in range(start, int(config["epochs"])):
        if stopper.should_stop:
            break
        model.train()
        t0, total, n = time.time(), 0.0, 0
        for batch in progress(iterate_batches(train, bs, shuffle=True, generator=gen), f"epoch {epoch}", show,
                              total=(len(train) + bs - 1) // bs):
            batch = _to(batch, device)
            loss, _ = model.compute_loss(batch)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss became {loss.item()} at epoch {epoch}; lower learning_rate")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(batch["labels"])
            n += len(batch["labels"])
        if run is not None:
            run.log_train(epoch, loss=total / max(n, 1), seconds=time.time() - t0)
        if (epoch + 1) % eval_step == 0 or epoch + 1 == int(config["epochs"]):
            valid = evaluate(model, valid_split, data.tasks, ebs, device)
            if metric not in valid:
                raise ValueError(f"valid_metric {metric!r} is not computed; choose one of {sorted(valid)}")
            if run is not None:
                run.log_metrics(epoch, "valid", valid)
            if history is not None:
                history.append({"epoch": epoch, "loss": total / max(n, 1), **valid})
            if stopper.step(valid[metric]):
                best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
                if run is not None:
                    run.save_checkpoint({"model": best_state, "epoch": epoch, "valid": valid}, "best.pt")
        if run is not None:
            run.save_checkpoint({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch,
                                 "early_stopping": stopper.state_dict(), "generator": gen.get_state(),
                                 "rng": capture_rng_state()}, "last.pt")
    if best_state is not None:
        model.load_state_dict(best_state)
    test = evaluate(model, test_split, data.tasks, ebs, device)
    test["best_epoch"] = -1 if stopper.best_step is None else stopper.best_step * eval_step - 1
    if run is not None:
        run.log_test(test)
    return test


def train_multitask(config: Any, run: RunDir) -> dict[str, Any]:
    """The task's trainer: load the dataset, build the model, :func:`fit`."""
    device = resolve_device(config["device"])
    data = load_data(config)
    run.logger.info("%s", data.summary())
    model = get_model(config["model"])(config, data)
    run.logger.info("%s: %d parameters", config["model"], sum(p.numel() for p in model.parameters()))
    return fit(model, data, config, run, device)
