"""Task ``multitask``: several binary labels per impression, summed BCE, AUC and user-grouped gAUC per task.

Model selection: the epoch with the best validation ``valid_metric`` (default ``mean_auc``); the splits are
small next to the model's activations, so they stay on the device for the whole run.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from graphattn.registry import get_dataset
from graphattn.training import SizedBatches, Task

from .base import MultiTaskModel
from .data import MultiTaskData, MultiTaskSplit, iterate_batches, load_csv_dir_config
from .metrics import multitask_metrics

__all__ = ["MultiTaskTask", "load_data", "evaluate_split"]


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
def evaluate_split(model: MultiTaskModel, split: MultiTaskSplit, tasks: list[str], batch_size: int) -> dict[str, float]:
    """Per-task AUC / gAUC (and their means) of ``model`` on ``split`` (batches on the split's device)."""
    model.eval()
    scores = [model.predict(batch).float().cpu() for batch in iterate_batches(split, batch_size)]
    pred = torch.cat(scores).numpy() if scores else np.zeros((0, len(tasks)))
    return multitask_metrics(split.labels.cpu().numpy(), pred, split.user.cpu().numpy(), tasks)


class MultiTaskTask(Task):
    model_base = MultiTaskModel

    def __init__(self, config: Mapping[str, Any], data: MultiTaskData | None = None) -> None:
        super().__init__(config, data)
        self.generator = torch.Generator().manual_seed(int(config["seed"]))
        self.splits = {"train": self.data.train, "valid": self.data.valid, "test": self.data.test}

    def load_data(self, config):
        return load_data(config)

    def describe(self) -> str:
        return self.data.summary()

    def metric_names(self) -> list[str]:
        return [f"{kind}_{t}" for kind in ("auc", "gauc") for t in self.data.tasks] + ["mean_auc", "mean_gauc"]

    def setup(self, model, device) -> None:
        super().setup(model, device)
        self.splits = {name: split.to(device) for name, split in self.splits.items()}

    def batches(self, phase: str) -> SizedBatches:
        train, bs = self.splits["train"], int(self.config["train_batch_size"])
        return SizedBatches(iterate_batches(train, bs, shuffle=True, generator=self.generator), math.ceil(len(train) / bs))

    def loss(self, model: MultiTaskModel, batch, phase: str):
        loss, _ = model.compute_loss(batch)
        return loss, {}

    def evaluate(self, model: MultiTaskModel, split: str) -> dict[str, float]:
        return evaluate_split(model, self.splits[split], self.data.tasks, int(self.config["eval_batch_size"]))

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.generator.set_state(state["generator"])
