"""Task ``vision``: classification or regression with any :class:`vision.base.VisionModel`.

Per epoch one pass over the training split (shuffled by torch's global generator, which the Trainer saves
with the run) through ``model.compute_loss``; evaluation through ``model.predict`` over a whole split.
``valid_metric: auto`` is the first of ``metrics`` (by task type when empty); ``rmse`` and ``mae`` are
minimised, the rest maximised. Keys: train_batch_size, eval_batch_size, num_workers, metrics, valid_metric
(the optimiser, schedule and clipping keys are the Trainer's).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch.utils.data import DataLoader

from graphattn.registry import get_dataset
from graphattn.training import Task, move_to, progress
from vision.base import VisionData, VisionModel
from vision.metrics import CLASSIFICATION_METRICS, DEFAULT_METRICS, MINIMISED, REGRESSION_METRICS, compute_metrics

__all__ = ["VisionTask", "load_data", "metric_names", "evaluate_loader"]


def load_data(config: Mapping[str, Any]) -> VisionData:
    """Load the config's dataset through its registered loader and check it is a ``VisionData``."""
    entry = get_dataset(config["dataset"], "vision")
    if entry.loader is None:
        raise ValueError(f"dataset '{config['dataset']}' is a directory; the vision task reads registered datasets only")
    data = entry.loader(config)
    if not isinstance(data, VisionData):
        raise TypeError(f"loader of dataset '{config['dataset']}' returned {type(data).__name__}, expected vision.base.VisionData")
    return data


def metric_names(config: Mapping[str, Any], task_type: str) -> tuple[list[str], str]:
    """The metrics computed and the validation metric (``auto`` resolved), checked against the task type."""
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
    return names, valid_metric


@torch.no_grad()
def evaluate_loader(model: VisionModel, loader: DataLoader, device: torch.device, names: list[str],
                    show: bool = False, desc: str = "eval") -> dict[str, float]:
    """Predict every batch of ``loader`` and compute ``names`` over the whole split."""
    model.eval()
    preds, targets = [], []
    for batch in progress(loader, desc=desc, enabled=show):
        p, t = model.predict(move_to(batch, device))
        preds.append(p.detach().float().cpu() if p.is_floating_point() else p.detach().cpu())
        targets.append(t.detach().cpu())
    if not preds:
        raise ValueError(f"{desc}: the split is empty; nothing to evaluate")
    return compute_metrics(torch.cat(preds), torch.cat(targets), names, model.task_type)


class VisionTask(Task):
    model_base = VisionModel

    def __init__(self, config: Mapping[str, Any], data: VisionData | None = None) -> None:
        super().__init__(config, data)
        self.names, self._metric = metric_names(config, self.data.task_type)
        workers = int(config["num_workers"])
        kw: dict[str, Any] = {"collate_fn": self.data.collate_fn, "num_workers": workers, "persistent_workers": workers > 0}
        # before the loaders: torch's shuffling sampler fails on an empty split with a message naming no split
        empty = [split for split in ("train", "valid", "test") if len(getattr(self.data, split)) == 0]
        if empty:
            sizes = "/".join(str(len(getattr(self.data, s))) for s in ("train", "valid", "test"))
            raise ValueError(f"dataset '{config['dataset']}': the {' and '.join(empty)} split(s) are empty "
                             f"(train/valid/test = {sizes} examples); every split needs at least one example, "
                             "check the dataset's split keys and files")
        self.loaders = {
            "train": DataLoader(self.data.train, batch_size=config["train_batch_size"], shuffle=True, **kw),
            "valid": DataLoader(self.data.valid, batch_size=config["eval_batch_size"], shuffle=False, **kw),
            "test": DataLoader(self.data.test, batch_size=config["eval_batch_size"], shuffle=False, **kw),
        }

    def load_data(self, config):
        return load_data(config)

    def describe(self) -> str:
        d = self.data
        return (f"{self.config['dataset']}: {d.task_type}, {d.num_classes} outputs, "
                f"{len(d.train)}/{len(d.valid)}/{len(d.test)} examples")

    @property
    def metric(self) -> str:
        return self._metric

    @property
    def mode(self) -> str:
        return "min" if self._metric in MINIMISED else "max"

    def metric_names(self) -> list[str]:
        return list(self.names)

    def batches(self, phase: str) -> DataLoader:
        return self.loaders["train"]

    def loss(self, model: VisionModel, batch, phase: str):
        loss, _, _ = model.compute_loss(batch)
        return loss, {}

    def evaluate(self, model: VisionModel, split: str) -> dict[str, float]:
        return evaluate_loader(model, self.loaders[split], self.device, self.names,
                               bool(self.config["show_progress"]), desc=split)
