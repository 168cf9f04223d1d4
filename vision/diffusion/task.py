"""Task ``diffusion``: train a class-conditional noise predictor with the DDPM loss.

Per epoch one pass over the shuffled training images; for every batch the task draws (from its own seeded
generator, saved with the run so a resumed run continues exactly) the steps ``t ~ U{0..T-1}``, the noise
``eps ~ N(0, I)`` and which labels are dropped to the null class (probability ``class_dropout``, for
classifier-free guidance). Evaluation is the same loss on a split with ``eval_draws`` fixed (seeded) draws of
``(t, eps)`` per image, so every evaluation of a split sees the same noise: ``mse`` (minimised).

Keys (``vision/diffusion/overall.yaml``): timesteps, noise_schedule, class_dropout, eval_draws,
train_batch_size, eval_batch_size.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from graphattn.registry import get_dataset
from graphattn.training import SizedBatches, Task

from .base import DiffusionModel
from .data import DiffusionData

__all__ = ["DiffusionTask"]


class DiffusionTask(Task):
    model_base = DiffusionModel
    metric = "mse"
    mode = "min"
    task_name = "diffusion"         # the registry's task whose datasets load_data looks up

    def __init__(self, config: Mapping[str, Any], data: DiffusionData | None = None) -> None:
        super().__init__(config, data)
        self.timesteps = int(config["timesteps"])
        self.dropout = float(config["class_dropout"])
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"class_dropout: expected a float in [0, 1), got {self.dropout}")
        self.draws = int(config["eval_draws"])
        if self.draws < 1:
            raise ValueError(f"eval_draws: expected an int >= 1, got {self.draws}")
        if len(self.data["train"][1]) == 0:
            raise ValueError(f"dataset '{config['dataset']}' has an empty training split")
        self.generator = torch.Generator().manual_seed(int(config["seed"]))

    def load_data(self, config):
        data = get_dataset(config["dataset"], self.task_name).loader(config)
        if not isinstance(data, DiffusionData):
            raise TypeError(f"loader of dataset '{config['dataset']}' returned {type(data).__name__}, "
                            "expected vision.diffusion.data.DiffusionData")
        return data

    def describe(self) -> str:
        sizes = "/".join(str(len(self.data[s][1])) for s in ("train", "valid", "test"))
        return f"{self.config['dataset']}: {self.data.num_classes} classes, {sizes} images"

    def metric_names(self) -> list[str]:
        return ["mse"]

    def _draw(self, x: torch.Tensor, y: torch.Tensor, g: torch.Generator) -> dict[str, torch.Tensor]:
        n = len(y)
        return {"x": x, "y": y, "t": torch.randint(0, self.timesteps, (n,), generator=g),
                "noise": torch.randn(x.shape, generator=g), "drop": torch.rand(n, generator=g) < self.dropout}

    def batches(self, phase: str) -> SizedBatches:
        x, y = self.data["train"]
        size = int(self.config["train_batch_size"])
        order = torch.randperm(len(y), generator=self.generator)
        chunks = [order[i:i + size] for i in range(0, len(y), size)]
        return SizedBatches((self._draw(x[c], y[c], self.generator) for c in chunks), len(chunks))

    def loss(self, model: DiffusionModel, batch, phase: str):
        return model.loss(batch), {}

    def eval_batches(self, split: str):
        """The split's evaluation batches on the task's device: ``eval_draws`` passes with fixed (seeded) draws of
        ``(t, eps)``, no label dropped; the same noise on every evaluation."""
        x, y = self.data[split]
        if len(y) == 0:
            raise ValueError(f"{split}: the split is empty; nothing to evaluate")
        g = torch.Generator().manual_seed(12345)
        size = int(self.config["eval_batch_size"])
        for _ in range(self.draws):
            for i in range(0, len(y), size):
                batch = self._draw(x[i:i + size], y[i:i + size], g)
                batch["drop"] = torch.zeros_like(batch["drop"])
                yield {k: v.to(self.device) for k, v in batch.items()}

    @torch.no_grad()
    def evaluate(self, model: DiffusionModel, split: str) -> dict[str, float]:
        total, count = 0.0, 0
        for batch in self.eval_batches(split):
            n = len(batch["y"])
            total += float(model.loss(batch)) * n
            count += n
        return {"mse": total / count}

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.generator.set_state(state["generator"])
