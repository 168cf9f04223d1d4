"""Task ``sequential``: next-item recommendation, leave-one-out full-ranking evaluation.

Training batches are windows of each user's training history (:meth:`SeqData.train_batches`), drawn and
shuffled by a generator seeded from ``seed`` (saved with the run, so a resumed run draws the same windows).
Evaluation ranks every item for the held-out item of the split; with ``exclude_history`` the user's
context items are ranked out.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from graphattn.registry import get_dataset
from graphattn.training import SizedBatches, Task, generator_state, set_generator_state
from recsys.evaluation import FullRankEvaluator
from recsys.task import rank_metrics

from .base import SequentialRecommender
from .data import SeqData

__all__ = ["SequentialTask", "load_data"]


def load_data(config: Mapping[str, Any]) -> SeqData:
    entry = get_dataset(config["dataset"], "sequential")
    data = entry.loader(config)
    if not isinstance(data, SeqData):
        raise TypeError(f"dataset '{config['dataset']}' loader returned {type(data).__name__}, expected SeqData")
    return data


class SequentialTask(Task):
    model_base = SequentialRecommender

    def __init__(self, config: Mapping[str, Any], data: SeqData | None = None) -> None:
        super().__init__(config, data)
        self.rng = np.random.default_rng(int(config["seed"]))
        self.evaluator = FullRankEvaluator(topk=list(config["topk"]), metrics=list(config["metrics"]),
                                           chunk_size=int(config["eval_batch_size"]))

    def load_data(self, config):
        return load_data(config)

    def describe(self) -> str:
        return str(self.data.stats())

    def metric_names(self) -> list[str]:
        return rank_metrics(self.config)

    def batches(self, phase: str) -> SizedBatches:
        c = self.config
        bs, per_user = int(c["train_batch_size"]), int(c["windows_per_user"])
        n = per_user * sum(1 for items in self.data.items if len(items) - 2 >= 2)
        batches = self.data.train_batches(bs, int(c["max_len"]), self.rng, per_user, bool(c["random_window"]))
        return SizedBatches(batches, math.ceil(n / bs))

    def loss(self, model: SequentialRecommender, batch, phase: str):
        return model.calculate_loss(batch)

    def evaluate(self, model: SequentialRecommender, split: str) -> dict[str, float]:
        max_len = int(self.config["max_len"])

        def score(users: np.ndarray) -> torch.Tensor:
            batch = {k: v.to(self.device) for k, v in self.data.eval_batch(users, split, max_len).items()}
            return model.full_sort_predict(batch).float().cpu()

        return self.evaluator.evaluate_scores(score, self.data.ground_truth(split), self.data.exclude(split))

    def state_dict(self) -> dict[str, Any]:
        return {"rng": generator_state(self.rng)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        set_generator_state(self.rng, state["rng"])
