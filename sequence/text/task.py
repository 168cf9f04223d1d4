"""Task ``text_classification``: binary sequence classification, optionally with adversarial training on the
attention scores (Vanilla / Attention RP / AT / iAT, :mod:`sequence.text.adversarial`).

Per epoch one pass over the training split in an order drawn from a generator the task owns (seeded by
``seed``; it also draws Attention RP's noise, and is saved with the run so a resumed run continues exactly).
The loss is binary cross-entropy on the model's logit; ``at_mode`` adds ``at_lambda`` times the loss under a
score perturbation of norm ``at_epsilon``. Evaluation reports ``accuracy``, ``bce`` and ``cue_mass`` (the
readout's attention mass on the ground-truth important tokens).
Keys: train_batch_size, eval_batch_size, at_mode, at_epsilon, at_lambda, valid_metric.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from graphattn.registry import get_dataset
from graphattn.training import SizedBatches, Task, move_to

from .adversarial import config_mode, perturbed_loss
from .base import TextClassifier
from .data import TextData
from .metrics import cue_mass, readout_attention

__all__ = ["TextClassificationTask", "load_data", "bce_loss"]


def load_data(config: Mapping[str, Any]) -> TextData:
    entry = get_dataset(config["dataset"], "text_classification")
    data = entry.loader(config)
    if not isinstance(data, TextData):
        raise TypeError(f"loader of dataset '{config['dataset']}' returned {type(data).__name__}, expected "
                        "sequence.text.data.TextData")
    return data


def bce_loss(model: TextClassifier, batch: Mapping[str, Any]):
    return F.binary_cross_entropy_with_logits(model(batch), batch["label"])


class TextClassificationTask(Task):
    model_base = TextClassifier

    def __init__(self, config: Mapping[str, Any], data: TextData | None = None) -> None:
        self.at_mode, self.at_epsilon, self.at_lambda = config_mode(config)   # before the data is generated
        super().__init__(config, data)
        self.generator = torch.Generator().manual_seed(int(config["seed"]))

    def load_data(self, config):
        return load_data(config)

    def describe(self) -> str:
        return f"{self.data}; training {self.at_mode} (eps {self.at_epsilon}, lambda {self.at_lambda})"

    def metric_names(self) -> list[str]:
        return ["accuracy", "bce", "cue_mass"]

    @property
    def mode(self) -> str:
        return "min" if self.metric == "bce" else "max"

    def batches(self, phase: str) -> SizedBatches:
        split, size = self.data.train, int(self.config["train_batch_size"])
        chunks = torch.randperm(len(split), generator=self.generator).split(size)
        return SizedBatches((split.batch(c) for c in chunks), math.ceil(len(split) / size))

    def loss(self, model: TextClassifier, batch, phase: str):
        if self.at_mode == "vanilla":
            return bce_loss(model, batch), {}
        # the encoder sees no score perturbation: run it once and let both passes share it
        states = model.encode(model.embed(batch["tokens"]), batch["mask"])

        def decide_loss(model_, batch_):
            return F.binary_cross_entropy_with_logits(model_.decide(states, batch_["mask"]), batch_["label"])

        return perturbed_loss(model, batch, decide_loss, self.at_mode, self.at_epsilon, self.at_lambda,
                              self.generator)

    def evaluate(self, model: TextClassifier, split: str) -> dict[str, float]:
        data, size = self.data.split(split), int(self.config["eval_batch_size"])
        correct = bce = mass = 0.0
        for index in torch.arange(len(data)).split(size):
            batch = move_to(data.batch(index), self.device)
            logits, attention = readout_attention(model, batch)
            correct += float(((logits > 0).float() == batch["label"]).sum())
            bce += float(F.binary_cross_entropy_with_logits(logits, batch["label"], reduction="sum"))
            mass += float(cue_mass(attention, batch["cue"]).sum())
        return {"accuracy": correct / len(data), "bce": bce / len(data), "cue_mass": mass / len(data)}

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.generator.set_state(state["generator"])
