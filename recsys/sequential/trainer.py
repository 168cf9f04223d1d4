"""Trainer of task ``sequential``: next-item training, leave-one-out full-ranking evaluation.

``train_sequential(config, run)`` loads the dataset, builds ``Model(config, data)``, trains with Adam on
:meth:`SeqData.train_batches`, evaluates on the validation targets every ``eval_step`` epochs (metric
``valid_metric``), keeps ``best.pt`` / ``last.pt`` and stops early after ``stopping_step`` evaluations
without improvement; then reloads the best weights and returns the test metrics. Every item is ranked
(full ranking, :meth:`recsys.evaluation.FullRankEvaluator.evaluate_scores`); with ``exclude_history`` the
user's context items are ranked out. ``resume`` continues from a run folder's ``last.pt``.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from graphattn.config import Config
from graphattn.registry import get_dataset, get_model
from graphattn.train import (EarlyStopping, RunDir, capture_rng_state, find_checkpoint, load_checkpoint, progress,
                             resolve_device, restore_rng_state, seed_everything)
from recsys.evaluation import FullRankEvaluator

from .data import SeqData

__all__ = ["train_sequential", "load_data", "build_model", "evaluate", "fit"]


def load_data(config: Config | dict) -> SeqData:
    entry = get_dataset(config["dataset"], "sequential")
    data = entry.loader(config)
    if not isinstance(data, SeqData):
        raise TypeError(f"dataset '{config['dataset']}' loader returned {type(data).__name__}, expected SeqData")
    return data


def build_model(config: Config | dict, data: SeqData, device: torch.device | str = "cpu") -> torch.nn.Module:
    return get_model(config["model"])(config, data).to(device)


def _to(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in batch.items()}


@torch.no_grad()
def evaluate(model, data: SeqData, split: str, config: Config | dict, device: torch.device | str = "cpu") -> dict[str, float]:
    """Full-ranking metrics (``hit@K``, ``ndcg@K``, ...) of the held-out item of ``split``."""
    model.eval()
    evaluator = FullRankEvaluator(topk=list(config["topk"]), metrics=list(config["metrics"]),
                                  chunk_size=int(config["eval_batch_size"]))

    def score(users: np.ndarray) -> torch.Tensor:
        batch = _to(data.eval_batch(users, split, int(config["max_len"])), torch.device(device))
        return model.full_sort_predict(batch).float().cpu()

    return evaluator.evaluate_scores(score, data.ground_truth(split), data.exclude(split))


def fit(model, data: SeqData, config: Config | dict, run: RunDir | None = None,
        device: torch.device | str = "cpu", start: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train with early stopping on ``valid_metric``; returns ``{"best_state", "best_valid", "epochs"}``.

    ``run`` (optional) receives losses, validation metrics, checkpoints and curves; ``start`` is a
    checkpoint dict to resume from.
    """
    device = torch.device(device)
    opt = torch.optim.Adam(model.parameters(), lr=float(config["learning_rate"]),
                           weight_decay=float(config["weight_decay"]))
    stopper = EarlyStopping(int(config["stopping_step"]), mode="max")
    rng = np.random.default_rng(int(config["seed"]))
    first_epoch, best_state, best_valid = 0, None, None
    if start is not None:
        model.load_state_dict(start["model"])
        opt.load_state_dict(start["optimizer"])
        stopper.load_state_dict(start["early_stopping"])
        rng.bit_generator.state = start["numpy_generator"]
        restore_rng_state(start["rng"])
        first_epoch = int(start["epoch"]) + 1
        best_state = start.get("best_model")
        best_valid = start.get("best_valid")
    metric = str(config["valid_metric"])
    epochs = int(config["epochs"])
    epoch = first_epoch - 1
    for epoch in range(first_epoch, epochs):
        model.train()
        sums: dict[str, float] = {}
        n = 0
        batches = data.train_batches(int(config["train_batch_size"]), int(config["max_len"]), rng,
                                     int(config["windows_per_user"]), bool(config["random_window"]))
        for batch in progress(batches, desc=f"epoch {epoch}", enabled=bool(config["show_progress"])):
            loss, parts = model.calculate_loss(_to(batch, device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sums["loss"] = sums.get("loss", 0.0) + loss.item()
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + float(v)
            n += 1
        if run is not None:
            run.log_train(epoch, **{k: v / max(n, 1) for k, v in sums.items()})
        if (epoch + 1) % int(config["eval_step"]) == 0 or epoch == epochs - 1:
            valid = evaluate(model, data, "valid", config, device)
            if metric not in valid:
                raise ValueError(f"valid_metric '{metric}' is not computed; metrics are {sorted(valid)} "
                                 "(set topk / metrics accordingly)")
            if run is not None:
                run.log_metrics(epoch, "valid", valid)
            if stopper.step(valid[metric]):
                best_valid = valid
                best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
                if run is not None:
                    run.save_checkpoint({"model": best_state, "epoch": epoch, "valid": valid}, "best.pt")
            if run is not None:
                run.save_checkpoint({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch,
                                     "early_stopping": stopper.state_dict(), "rng": capture_rng_state(),
                                     "numpy_generator": rng.bit_generator.state, "best_model": best_state,
                                     "best_valid": best_valid}, "last.pt")
            if stopper.should_stop:
                if run is not None:
                    run.logger.info("early stop at epoch %d (best %s at evaluation %s)", epoch, metric,
                                    stopper.best_step)
                break
    return {"best_state": best_state, "best_valid": best_valid, "epochs": epoch + 1}


def train_sequential(config: Config, run: RunDir) -> dict[str, float]:
    """The task's trainer: ``trainer(config, run) -> test metrics``."""
    seed_everything(int(config["seed"]), bool(config["reproducibility"]))
    device = resolve_device(config["device"])
    data = load_data(config)
    run.logger.info("dataset %s", data.stats())
    model = build_model(config, data, device)
    run.logger.info("%s with %d parameters", type(model).__name__, sum(p.numel() for p in model.parameters()))
    start = load_checkpoint(find_checkpoint(config["resume"])) if config["resume"] else None
    result = fit(model, data, config, run, device, start)
    if result["best_state"] is not None:
        model.load_state_dict(result["best_state"])
    test = evaluate(model, data, "test", config, device)
    run.log_test(test)
    return test
