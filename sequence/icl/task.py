"""Task ``icl``: online training on freshly sampled prompts (in-context learning studies).

Every epoch is ``steps_per_epoch`` optimiser steps, each on a new batch of ``train_batch_size`` prompts
drawn from a generator the task owns (seeded by ``seed``, saved with the run so that a resumed run
continues exactly). Evaluation runs the model on the data's fixed evaluation sets (``icl_valid_size`` /
``icl_test_size`` prompts drawn once from ``data_seed``) and adds the model's weight-space diagnostics.
Keys: steps_per_epoch, train_batch_size, eval_batch_size, valid_metric.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from graphattn.registry import get_dataset
from graphattn.training import SizedBatches, Task, move_to

from .base import ICLModel

__all__ = ["ICLTask"]


class ICLTask(Task):
    model_base = ICLModel
    task_name = "icl"   # the registry task whose datasets this task loads (subclasses for other tasks override it)

    def __init__(self, config: Mapping[str, Any], data: Any = None) -> None:
        super().__init__(config, data)
        self.generator = torch.Generator().manual_seed(int(config["seed"]))

    def load_data(self, config):
        # the task is registered without path_loader_ok, so get_dataset refuses folders: always a loader here
        return get_dataset(config["dataset"], self.task_name).loader(config)

    @property
    def mode(self) -> str:
        return "min" if self.metric.endswith(("mse", "loss")) else "max"

    def batches(self, phase):
        steps, size = int(self.config["steps_per_epoch"]), int(self.config["train_batch_size"])
        if steps < 1 or size < 1:
            raise ValueError(f"steps_per_epoch and train_batch_size must be >= 1, got {steps}, {size}")
        return SizedBatches((self.data.sample(size, self.generator) for _ in range(steps)), steps)

    def loss(self, model, batch, phase):
        return model.loss(batch)

    def evaluate(self, model, split):
        size = int(self.config["eval_batch_size"])
        out: dict[str, float] = {}
        for name, full in self.data.eval_sets[split].items():
            n = len(next(iter(full.values())))
            sums: dict[str, float] = {}
            for start in range(0, n, size):
                chunk = {k: v[start:start + size] for k, v in full.items()}
                part = model.evaluate(move_to(chunk, self.device))
                weight = len(next(iter(chunk.values()))) / n
                for k, v in part.items():
                    sums[k] = sums.get(k, 0.0) + weight * float(v)
            out.update({(f"{name}_{k}" if name else k): v for k, v in sums.items()})
        out.update(model.diagnostics())
        return out

    def state_dict(self):
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state):
        self.generator.set_state(state["generator"])
