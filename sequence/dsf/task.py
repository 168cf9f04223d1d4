"""Task ``mqar``: next-token recall trained and judged only at the labelled (query) positions.

Per epoch one pass over the training split in an order drawn from a generator the task owns (seeded by
``seed``, saved with the run). The loss is the cross entropy at labelled positions; ``accuracy`` is the
fraction of labelled positions whose arg-max prediction is the value (Zoology's MQAR accuracy).
Keys: train_batch_size, eval_batch_size, valid_metric.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from graphattn.registry import get_dataset
from graphattn.training import SizedBatches, Task

from .models import RecallModel
from .mqar import IGNORE, RecallData

__all__ = ["RecallTask"]


class RecallTask(Task):
    model_base = RecallModel

    def __init__(self, config: Mapping[str, Any], data: RecallData | None = None) -> None:
        super().__init__(config, data)
        self.generator = torch.Generator().manual_seed(int(config["seed"]))

    def load_data(self, config):
        data = get_dataset(config["dataset"], "mqar").loader(config)
        if not isinstance(data, RecallData):
            raise TypeError(f"loader of dataset '{config['dataset']}' returned {type(data).__name__}, "
                            "expected sequence.dsf.mqar.RecallData")
        return data

    def metric_names(self) -> list[str]:
        return ["accuracy", "loss"]

    def batches(self, phase: str) -> SizedBatches:
        split, size = self.data.train, int(self.config["train_batch_size"])
        order = torch.randperm(len(split), generator=self.generator)
        return SizedBatches(((split.inputs[i], split.labels[i]) for i in order.split(size)),
                            math.ceil(len(split) / size))

    def loss(self, model, batch, phase: str):
        inputs, labels = batch
        keep = labels != IGNORE
        logits = model(inputs, keep)                                      # (K, V) at the query positions
        return F.cross_entropy(logits, labels[keep]), {}

    def evaluate(self, model, split: str) -> dict[str, float]:
        data, size = self.data.split(split), int(self.config["eval_batch_size"])
        correct = total = 0
        loss = 0.0
        for index in torch.arange(len(data)).split(size):
            inputs, labels = data.inputs[index].to(self.device), data.labels[index].to(self.device)
            keep = labels != IGNORE
            logits = model(inputs, keep)                                  # (K, V)
            correct += int((logits.argmax(-1) == labels[keep]).sum())
            total += int(keep.sum())
            loss += float(F.cross_entropy(logits, labels[keep], reduction="sum"))
        return {"accuracy": correct / max(total, 1), "loss": loss / max(total, 1)}

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.generator.set_state(state["generator"])
