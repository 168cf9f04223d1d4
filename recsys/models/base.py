"""What the recommendation task (:class:`recsys.task.RecTask`) expects of a model.

A model is built as ``Model(config, data)`` from the merged config and a :class:`recsys.data.RecDataset`.
Training runs the phases the model lists (``"cf"`` always; ``"kg"`` for knowledge-graph models), each with
its own sampler, loss and optimizer; after each epoch ``on_epoch_end`` runs (KGAT refreshes its attention
there). Evaluation ranks all items with ``full_sort_embeddings``: scores are ``user_emb @ item_emb.T``.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from graphattn.training import build_optimizer

from ..sampler import BPRSampler, KGSampler


def bpr_loss(pos: Tensor, neg: Tensor) -> Tensor:
    """``-ln sigmoid(pos - neg)``, averaged (softplus form, stable for large margins)."""
    return F.softplus(neg - pos).mean()


def l2_half(*tensors: Tensor) -> Tensor:
    """TensorFlow's ``l2_loss``: ``sum(x ** 2) / 2`` over all tensors (the official KGAT regulariser)."""
    return sum(t.pow(2).sum() for t in tensors) / 2


class RecModel(nn.Module):
    """Base class of recommendation models (see module docstring)."""

    phases: tuple[str, ...] = ("cf",)
    uses_kg: bool = False   # a knowledge-graph model: refuses a dataset without triples unless use_kg is false

    def __init__(self, config: Mapping, data):
        super().__init__()
        self.n_users, self.n_items = data.n_users, data.n_items
        if self.uses_kg and len(data.kg) == 0 and config.get("use_kg", True):
            raise ValueError(
                f"{type(self).__name__} needs a knowledge graph, but dataset '{data.name}' has no triples (no "
                "kg_final.txt in a KGAT-format folder, no <name>.kg atomic file, or every triple filtered out by "
                "kg_min_degree); add one, or set use_kg: false to train it without a KG on purpose")

    # -- training
    def cf_loss(self, users: Tensor, pos: Tensor, neg: Tensor) -> tuple[Tensor, dict[str, float]]:
        raise TypeError(f"{type(self).__name__} must define cf_loss")

    def kg_loss(self, heads: Tensor, relations: Tensor, tails: Tensor, neg_tails: Tensor) -> tuple[Tensor, dict]:
        raise TypeError(f"{type(self).__name__} lists a 'kg' phase but defines no kg_loss")

    def samplers(self, config: Mapping, data, seed: int) -> dict[str, BPRSampler | KGSampler]:
        return {"cf": BPRSampler(data.train, data.n_items, config["train_batch_size"], seed)}

    def optimizers(self, config: Mapping) -> dict[str, torch.optim.Optimizer]:
        """One optimiser (the ``optimizer`` key) shared by every phase."""
        opt = build_optimizer(config, self.parameters())
        return {phase: opt for phase in self.phases}

    def training_step(self, phase: str, batch) -> tuple[Tensor, dict[str, float]]:
        """Loss of one batch of ``phase`` (batches are tuples of long tensors from that phase's sampler)."""
        if phase == "cf":
            return self.cf_loss(*batch)
        if phase == "kg":
            return self.kg_loss(*batch)
        raise ValueError(f"{type(self).__name__} has no training phase {phase!r}")

    def on_epoch_end(self) -> None:
        """Hook after the training phases of an epoch."""

    # -- inference
    def full_sort_embeddings(self) -> tuple[Tensor, Tensor]:
        """``(n_users, d)`` and ``(n_items, d)`` whose dot products are the ranking scores."""
        raise TypeError(f"{type(self).__name__} must define full_sort_embeddings")

    @torch.no_grad()
    def predict(self, users: Tensor, items: Tensor) -> Tensor:
        """Scores of given (user, item) pairs; equal to the matching entries of the full-sort scores."""
        u, i = self.full_sort_embeddings()
        return (u[users] * i[items]).sum(-1)


def as_long(x: np.ndarray | Tensor, device) -> Tensor:
    return torch.as_tensor(np.asarray(x), dtype=torch.long, device=device)
