"""Task ``interactcomp``: imitation of scripted InteractComp experts, judged in the harness.

Training: per epoch one pass over the demonstration steps of the training split in an order drawn from a
generator the task owns (seeded by ``seed``, saved with the run), through the model's ``loss``.
Evaluation of a split: ``action_accuracy`` (teacher-forced: the share of expert steps whose action and
argument - the asked term, the answered entity - the model's greedy choice matches) and rollouts of every
item of the split in the harness (:func:`~.env.run_episodes`) in ``normal`` and ``forced_ask`` mode:
``accuracy``, ``ece``, ``interaction_rate``, ``rounds`` and the same with a ``forced_`` prefix.
Keys: train_batch_size, eval_batch_size, valid_metric, max_rounds, enforce_ask_min, top_k.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from graphattn.registry import get_dataset
from graphattn.training import SizedBatches, Task

from .data import InteractCompData
from .env import Responder, SearchEngine, run_episodes, summarise

__all__ = ["InteractCompTask", "rollout_metrics"]

_ROLLOUT = ("accuracy", "ece", "interaction_rate", "rounds")


def rollout_metrics(model, data: InteractCompData, items, config: Mapping[str, Any], mode: str) -> dict[str, float]:
    """The harness summary (:func:`~.env.summarise`) of ``model`` playing ``items`` in ``mode``."""
    episodes = run_episodes(items, model, SearchEngine(data.kb, int(config["top_k"])),
                            Responder(data.kb.num_attributes, data.kb.num_values), mode,
                            int(config["max_rounds"]), int(config["enforce_ask_min"]))
    return summarise(episodes)


class InteractCompTask(Task):
    fused_optimizer = False   # a 2-layer policy: the fused kernel gains nothing and its first use costs seconds

    def __init__(self, config: Mapping[str, Any], data: InteractCompData | None = None) -> None:
        if int(config["max_rounds"]) < int(config["enforce_ask_min"]) + 1:
            raise ValueError(f"max_rounds ({config['max_rounds']}) must be >= enforce_ask_min + 1 "
                             f"({int(config['enforce_ask_min']) + 1}) for the forced_ask rollouts")
        super().__init__(config, data)
        self.generator = torch.Generator().manual_seed(int(config["seed"]))

    def load_data(self, config):
        entry = get_dataset(config["dataset"], "interactcomp")
        data = entry.loader(config)
        if not isinstance(data, InteractCompData):
            raise TypeError(f"loader of dataset '{config['dataset']}' returned {type(data).__name__}, "
                            "expected InteractCompData")
        return data

    def metric_names(self) -> list[str]:
        return ["action_accuracy", *_ROLLOUT, *(f"forced_{m}" for m in _ROLLOUT)]

    def batches(self, phase: str) -> SizedBatches:
        demos, size = self.data.demos["train"], int(self.config["train_batch_size"])
        n = len(demos["act"])
        chunks = torch.randperm(n, generator=self.generator).split(size)
        return SizedBatches(({k: v[c] for k, v in demos.items()} for c in chunks), math.ceil(n / size))

    def loss(self, model, batch, phase: str):
        return model.loss(batch)

    def action_accuracy(self, model, split: str) -> float:
        demos, size = self.data.demos[split], int(self.config["eval_batch_size"])
        hits, n = 0, len(demos["act"])
        for idx in torch.arange(n).split(size):
            batch = {k: v[idx].to(self.device) for k, v in demos.items()}
            out = model(batch)
            act = out["action"].argmax(-1)
            ok = act == batch["act"]
            ask = batch["ask_term"] >= 0
            ok[ask] &= out["ask"][ask].argmax(-1) == batch["ask_term"][ask]
            ans = batch["answer_entity"] >= 0
            if ans.any():
                pointed = batch["entity"][ans].gather(1, out["pointer"][ans].argmax(-1, keepdim=True))[:, 0]
                ok[ans] &= pointed == batch["answer_entity"][ans]
            hits += int(ok.sum())
        return hits / max(n, 1)

    def evaluate(self, model, split: str) -> dict[str, float]:
        out = {"action_accuracy": self.action_accuracy(model, split)}
        items = self.data.items[split]
        for mode, prefix in (("normal", ""), ("forced_ask", "forced_")):
            summary = rollout_metrics(model, self.data, items, self.config, mode)
            out.update({f"{prefix}{m}": summary[m] for m in _ROLLOUT})
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.generator.set_state(state["generator"])
