"""Trainer of the ``vision`` task: classification or regression with any :class:`vision.base.VisionModel`.

``train(config, run) -> dict`` of test metrics. Per epoch: one pass over the training split through
``model.compute_loss``; every ``eval_step`` epochs an evaluation on the validation split through
``model.predict``; ``best.pt`` when ``valid_metric`` improves, ``last.pt`` after every epoch; early stopping
after ``stopping_step`` evaluations without improvement. At the end the best weights are reloaded and
evaluated on the test split. With ``resume`` the run continues from ``last.pt`` (model, optimiser, schedule,
early-stopping state and random generators), so an interrupted run ends as an uninterrupted one would.

Keys read (defaults in ``graphattn/overall.yaml`` and ``vision/overall.yaml``): epochs, learning_rate,
weight_decay, train_batch_size, eval_batch_size, eval_step, stopping_step, show_progress, resume, device,
seed, num_workers, label_smoothing (via the model), grad_clip, optimizer, momentum, scheduler,
warmup_epochs, metrics, valid_metric.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import DataLoader

from graphattn.registry import get_dataset, get_model
from graphattn.train import (
    EarlyStopping,
    RunDir,
    capture_rng_state,
    find_checkpoint,
    format_metrics_table,
    load_checkpoint,
    progress,
    resolve_device,
    restore_rng_state,
    seed_everything,
)
from vision.base import IGNORE_INDEX, VisionData, VisionModel

__all__ = ["train", "build_data", "build_model", "evaluate", "compute_metrics", "lr_factor", "METRICS", "MINIMISED"]

CLASSIFICATION_METRICS = ("accuracy", "macro_f1")
REGRESSION_METRICS = ("srcc", "plcc", "rmse", "mae")
METRICS = CLASSIFICATION_METRICS + REGRESSION_METRICS
MINIMISED = ("rmse", "mae")
DEFAULT_METRICS = {"classification": ["accuracy"], "regression": ["srcc", "plcc", "rmse"]}


# --------------------------------------------------------------------------- metrics


def _ranks(a: np.ndarray) -> np.ndarray:
    """Average ranks (ties share the mean rank), as Spearman's correlation needs."""
    order = np.argsort(a, kind="stable")
    ranks = np.empty(len(a), dtype=np.float64)
    ranks[order] = np.arange(len(a), dtype=np.float64)
    _, inverse, counts = np.unique(a, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    return sums[inverse] / counts[inverse]


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    denom = math.sqrt(float((a * a).sum()) * float((b * b).sum()))
    return float((a * b).sum() / denom) if denom > 0 else float("nan")


def compute_metrics(predictions: torch.Tensor, targets: torch.Tensor, names: list[str], task_type: str) -> dict[str, float]:
    """Metrics of one split.

    Classification: ``predictions`` are logits ``(N, C)`` (argmax taken) or class ids ``(N,)``; targets
    equal to ``IGNORE_INDEX`` are skipped. Regression: ``predictions`` and ``targets`` are flattened to ``(N,)``.
    """
    out: dict[str, float] = {}
    if task_type == "classification":
        pred = predictions.argmax(-1) if predictions.dim() > targets.dim() else predictions
        pred, tgt = pred.reshape(-1).long(), targets.reshape(-1).long()
        keep = tgt != IGNORE_INDEX
        pred, tgt = pred[keep], tgt[keep]
        for name in names:
            if name == "accuracy":
                out[name] = float((pred == tgt).float().mean()) if len(tgt) else float("nan")
            elif name == "macro_f1":
                f1s = []
                for c in torch.unique(torch.cat([tgt, pred])):
                    tp = float(((pred == c) & (tgt == c)).sum())
                    fp = float(((pred == c) & (tgt != c)).sum())
                    fn = float(((pred != c) & (tgt == c)).sum())
                    f1s.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn > 0 else 0.0)
                out[name] = float(np.mean(f1s)) if f1s else float("nan")
            else:
                raise ValueError(f"metric '{name}' is not a classification metric; use one of {', '.join(CLASSIFICATION_METRICS)}")
    else:
        p = predictions.detach().double().reshape(-1).cpu().numpy()
        t = targets.detach().double().reshape(-1).cpu().numpy()
        if p.shape != t.shape:
            raise ValueError(f"regression predictions have {p.size} values but targets {t.size}")
        for name in names:
            if name == "srcc":
                out[name] = _pearson(_ranks(p), _ranks(t))
            elif name == "plcc":
                out[name] = _pearson(p, t)
            elif name == "rmse":
                out[name] = float(np.sqrt(np.mean((p - t) ** 2)))
            elif name == "mae":
                out[name] = float(np.mean(np.abs(p - t)))
            else:
                raise ValueError(f"metric '{name}' is not a regression metric; use one of {', '.join(REGRESSION_METRICS)}")
    return out


# --------------------------------------------------------------------------- building blocks


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # namedtuple
        return type(batch)(*(_to_device(v, device) for v in batch))
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(v, device) for v in batch)
    if hasattr(batch, "to") and callable(batch.to):  # PyG Data/Batch and similar
        return batch.to(device)
    return batch


def build_data(config: Any) -> VisionData:
    """Load the config's dataset through its registered loader and check it is a ``VisionData``."""
    entry = get_dataset(config["dataset"], "vision")
    if entry.loader is None:
        raise ValueError(f"dataset '{config['dataset']}' is a directory; the vision task reads registered datasets only")
    data = entry.loader(config)
    if not isinstance(data, VisionData):
        raise TypeError(f"loader of dataset '{config['dataset']}' returned {type(data).__name__}, expected vision.base.VisionData")
    return data


def build_model(config: Any, data: VisionData) -> VisionModel:
    cls = get_model(config["model"])
    model = cls(config, data)
    if not isinstance(model, VisionModel):
        raise TypeError(f"model '{config['model']}' is a {type(model).__name__}; vision models subclass vision.base.VisionModel")
    return model


def _metric_names(config: Any, task_type: str) -> tuple[list[str], str, str]:
    names = list(config["metrics"]) or list(DEFAULT_METRICS[task_type])
    allowed = CLASSIFICATION_METRICS if task_type == "classification" else REGRESSION_METRICS
    bad = [n for n in names if n not in allowed]
    if bad:
        raise ValueError(f"metrics: {bad} do not apply to a {task_type} dataset; choose from {', '.join(allowed)}")
    valid_metric = config["valid_metric"]
    if valid_metric == "auto":
        valid_metric = names[0]
    if valid_metric not in names:
        raise ValueError(f"valid_metric: '{valid_metric}' is not among the computed metrics {names}; add it to metrics or choose one of them")
    return names, valid_metric, ("min" if valid_metric in MINIMISED else "max")


def _make_optimizer(config: Any, model: torch.nn.Module) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    lr, wd = config["learning_rate"], config["weight_decay"]
    name = config["optimizer"]
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=wd, momentum=config["momentum"])
    raise ValueError(f"optimizer: expected adamw, adam or sgd, got {name!r}")


def lr_factor(step: int, total_steps: int, warmup_steps: int, kind: str) -> float:
    """Multiplier of the base learning rate at optimiser step ``step`` (0-based).

    Linear warm-up ``(step + 1) / warmup_steps`` for the first ``warmup_steps`` steps, then 1 (``none``) or a
    cosine from 1 down to 0 at ``total_steps`` (``cosine``).
    """
    if kind not in ("cosine", "none"):
        raise ValueError(f"scheduler: expected cosine or none, got {kind!r}")
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if kind == "none":
        return 1.0
    span = max(1, total_steps - warmup_steps)
    progress_ = min(1.0, (step - warmup_steps) / span)
    return 0.5 * (1.0 + math.cos(math.pi * progress_))


@torch.no_grad()
def evaluate(model: VisionModel, loader: DataLoader, device: torch.device, names: list[str], show: bool = False, desc: str = "eval") -> dict[str, float]:
    """Predict every batch of ``loader`` and compute ``names`` over the whole split."""
    model.eval()
    preds, targets = [], []
    for batch in progress(loader, desc=desc, enabled=show):
        p, t = model.predict(_to_device(batch, device))
        preds.append(p.detach().float().cpu() if p.is_floating_point() else p.detach().cpu())
        targets.append(t.detach().cpu())
    if not preds:
        raise ValueError(f"{desc}: the split is empty; nothing to evaluate")
    return compute_metrics(torch.cat(preds), torch.cat(targets), names, model.task_type)


# --------------------------------------------------------------------------- the trainer


def train(config: Any, run: RunDir) -> dict[str, float]:
    """Train ``config['model']`` on ``config['dataset']``; return the test metrics of the best epoch."""
    seed_everything(config["seed"], config["reproducibility"])
    device = resolve_device(config["device"])
    data = build_data(config)
    model = build_model(config, data).to(device)
    names, valid_metric, mode = _metric_names(config, data.task_type)
    show = bool(config["show_progress"])
    epochs, eval_step = int(config["epochs"]), int(config["eval_step"])
    if epochs < 1 or eval_step < 1:
        raise ValueError(f"epochs and eval_step must be >= 1, got {epochs} and {eval_step}")
    grad_clip = float(config["grad_clip"])

    workers = int(config["num_workers"])
    loader_kw: dict[str, Any] = {"collate_fn": data.collate_fn, "num_workers": workers, "persistent_workers": workers > 0}
    train_loader = DataLoader(data.train, batch_size=config["train_batch_size"], shuffle=True, drop_last=False, **loader_kw)
    valid_loader = DataLoader(data.valid, batch_size=config["eval_batch_size"], shuffle=False, **loader_kw)
    test_loader = DataLoader(data.test, batch_size=config["eval_batch_size"], shuffle=False, **loader_kw)
    if len(train_loader) == 0:
        raise ValueError(f"dataset '{config['dataset']}' has an empty training split")

    optimizer = _make_optimizer(config, model)
    steps_per_epoch = len(train_loader)
    total_steps = epochs * steps_per_epoch
    warmup_steps = int(config["warmup_epochs"]) * steps_per_epoch
    kind = config["scheduler"]
    lr_factor(0, total_steps, warmup_steps, kind)  # validates the scheduler name before training
    factor: Callable[[int], float] = lambda step: lr_factor(step, total_steps, warmup_steps, kind)  # noqa: E731
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    stopper = EarlyStopping(int(config["stopping_step"]), mode=mode)
    start_epoch = 0

    if config["resume"]:
        state = load_checkpoint(find_checkpoint(config["resume"], "last.pt"))
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        stopper.load_state_dict(state["stopper"])
        start_epoch = int(state["epoch"])
        restore_rng_state(state["rng"])
        run.logger.info("resumed from epoch %d (best %s = %s)", start_epoch, valid_metric, stopper.best)

    n_params = sum(p.numel() for p in model.parameters())
    run.logger.info("%s on %s: %d parameters, %d/%d/%d examples, %s", config["model"], config["dataset"], n_params, len(data.train), len(data.valid), len(data.test), device)

    for epoch in range(start_epoch + 1, epochs + 1):
        if stopper.should_stop:
            break
        model.train()
        total, count = 0.0, 0
        for batch in progress(train_loader, desc=f"epoch {epoch}", enabled=show):
            batch = _to_device(batch, device)
            loss, _, _ = model.compute_loss(batch)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"epoch {epoch}: training loss is {loss.item()}; lower learning_rate or set grad_clip")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            optimizer.step()
            scheduler.step()
            total += float(loss.detach())
            count += 1
        run.log_train(epoch, loss=total / count, lr=optimizer.param_groups[0]["lr"])

        if epoch % eval_step == 0 or epoch == epochs:
            metrics = evaluate(model, valid_loader, device, names, show, desc="valid")
            run.log_metrics(epoch, "valid", metrics)
            if stopper.step(metrics[valid_metric]):
                run.save_checkpoint({"model": model.state_dict(), "epoch": epoch, valid_metric: metrics[valid_metric]}, "best.pt")
        run.save_checkpoint(
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "stopper": stopper.state_dict(),
                "epoch": epoch,
                "rng": capture_rng_state(),
            },
            "last.pt",
        )
        if stopper.should_stop:
            run.logger.info("early stopping at epoch %d: no %s improvement in %d evaluations", epoch, valid_metric, stopper.patience)
            break

    best = run.path / "best.pt"
    if best.is_file():
        state = load_checkpoint(best)
        model.load_state_dict(state["model"])
        run.logger.info("testing the best epoch %d (%s = %.4f)", state["epoch"], valid_metric, state[valid_metric])
    test = evaluate(model, test_loader, device, names, show, desc="test")
    run.log_test(test)
    run.plot_curves()
    run.logger.info("test metrics\n%s", format_metrics_table(test))
    return test
