"""Task ``recsys``: top-K recommendation from implicit feedback (and a knowledge graph), full ranking.

The model decides the training phases (``cf`` always; ``kg`` for KGAT), each with its own sampler and
optimiser (:class:`recsys.models.base.RecModel`), and its hook after each epoch (KGAT's attention refresh).
Evaluation ranks all items for every user of the split, excluding the user's training items (and, on the
test split, the validation items). Without a validation split, model selection uses the test split, as the
official KGAT code does.

With several processes (``torchrun``) every sampler hands each rank an equal share of its global batch, and the
evaluation ranks a share of the users on each rank and gathers the per-user metrics
(:meth:`FullRankEvaluator.evaluate`'s ``shard``); the model's full-sort embeddings are computed on every rank.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from graphattn.registry import get_dataset
from graphattn.training import SizedBatches, Task, distributed

from .evaluation import FullRankEvaluator
from .models.base import RecModel

__all__ = ["RecTask", "load_data", "build_evaluator", "rank_metrics"]


def load_data(config: Mapping):
    """The dataset named (or the folder given) by ``config["dataset"]``, with ``use_kg`` / ``kg_min_degree``
    applied (:meth:`RecDataset.filter_kg`)."""
    entry = get_dataset(config["dataset"], "recsys")
    config = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    if entry.is_path:
        from .data import load_dataset
        data = load_dataset(entry.name, config)
    else:
        data = entry.loader(config)
    return data.filter_kg(bool(config.get("use_kg", True)), int(config.get("kg_min_degree", 0)))


def build_evaluator(config: Mapping) -> FullRankEvaluator:
    return FullRankEvaluator(topk=config["topk"], metrics=config["metrics"], backend=config["eval_backend"],
                             faiss_index=config["faiss_index"], chunk_size=config["eval_batch_size"],
                             faiss_shards=config["faiss_shards"], faiss_params=config["faiss_params"])


def rank_metrics(config: Mapping) -> list[str]:
    """``<metric>@<k>`` for every configured metric and cut-off (what the evaluator returns)."""
    return [f"{m}@{k}" for m in config["metrics"] for k in config["topk"]]


def _to_tensors(batch):
    if isinstance(batch, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(batch, dtype=np.int64))
    return tuple(_to_tensors(b) for b in batch)


class RecTask(Task):
    model_base = RecModel

    def __init__(self, config: Mapping[str, Any], data: Any = None) -> None:
        super().__init__(config, data)
        self.evaluator = build_evaluator(config)
        self.valid_split = "valid" if len(self.data.valid) else "test"
        self.samplers: dict[str, Any] = {}
        self.phases = ("cf",)

    def load_data(self, config):
        return load_data(config)

    def metric_names(self) -> list[str]:
        return rank_metrics(self.config)

    def setup(self, model: RecModel, device: torch.device) -> None:
        super().setup(model, device)
        self.phases = tuple(model.phases)
        self.samplers = model.samplers(self.config, self.data, int(self.config["seed"]))
        missing = [p for p in self.phases if p not in self.samplers]
        if missing:
            raise ValueError(f"{type(model).__name__}.samplers() gives none for phase(s) {missing}")
        if distributed.is_distributed():
            for sampler in self.samplers.values():
                sampler.shard(distributed.rank(), distributed.world_size())

    def optimizers(self, model: RecModel):
        return model.optimizers(self.config)

    def batches(self, phase: str) -> SizedBatches:
        """The phase's sampler, its numpy batches as tuples of long tensors."""
        sampler = self.samplers[phase]
        return SizedBatches((_to_tensors(batch) for batch in sampler), len(sampler))

    def loss(self, model: RecModel, batch, phase: str):
        return model.training_step(phase, batch)

    def end_epoch(self, model: RecModel) -> None:
        model.on_epoch_end()

    def evaluate(self, model: RecModel, split: str) -> dict[str, float]:
        user_emb, item_emb = model.full_sort_embeddings()
        data = self.data
        exclude = [data.csr("train")] + ([data.csr("valid")] if split == "test" and len(data.valid) else [])
        return self.evaluator.evaluate(user_emb.float().cpu(), item_emb.float().cpu(), data.csr(split), exclude,
                                       shard=(distributed.rank(), distributed.world_size()))

    def state_dict(self) -> dict[str, Any]:
        return {"samplers": {name: s.state_dict() for name, s in self.samplers.items()}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        saved = state.get("samplers", {})
        for name, sampler in self.samplers.items():
            if name not in saved:
                raise ValueError(f"checkpoint has no state for the '{name}' sampler (it has {sorted(saved)})")
            sampler.load_state_dict(saved[name])
