"""What every multi-task ranking model shares: field embeddings, MLPs and the summed-BCE loss.

Config keys read here (defaults in ``recsys/multitask/overall.yaml``): ``embedding_size``, ``embedding_init_std``,
``tower_hidden``, ``dropout``, ``task_weights``.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .data import PAD, MultiTaskData

__all__ = ["MultiTaskModel", "FeatureEmbedding", "mlp", "masked_pool"]


def mlp(in_dim: int, hidden: Sequence[int], out_dim: int | None = None, dropout: float = 0.0) -> nn.Sequential:
    """``Linear -> ReLU -> Dropout`` per hidden width, then a final ``Linear`` to ``out_dim`` (if given)."""
    layers: list[nn.Module] = []
    d = in_dim
    for h in hidden:
        layers += [nn.Linear(d, int(h)), nn.ReLU()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        d = int(h)
    if out_dim is not None:
        layers.append(nn.Linear(d, out_dim))
    return nn.Sequential(*layers)


def masked_pool(x: Tensor, mask: Tensor, mode: str = "sum") -> Tensor:
    """Pool ``(B, L, d)`` over valid positions (``mask`` (B, L) True = real token): ``sum`` or ``mean``."""
    if mode not in ("sum", "mean"):
        raise ValueError(f"pooling must be 'sum' or 'mean', got {mode!r}")
    total = (x * mask.unsqueeze(-1).to(x.dtype)).sum(1)
    if mode == "mean":
        total = total / mask.sum(1, keepdim=True).clamp_min(1).to(x.dtype)
    return total


class FeatureEmbedding(nn.Module):
    """Embedding tables, one per vocabulary (fields naming the same vocabulary share one).

    Args:
        data: the dataset (its vocabularies, fields and sequence lengths).
        dim: embedding width d.
        type_embedding: add a learned behaviour-type vector to each sequence token (its "side info"), so
            attention over the concatenated sequences can tell behaviour types apart.
        init_std: standard deviation of the normal initialisation.

    Shapes:
        forward(batch) -> C (B, M, d), S (B, L, d) with L = sum of sequence lengths, seq_mask (B, L) bool
        (True = real token). ``seq_type`` (L,) holds each position's behaviour type.
    """

    def __init__(self, data: MultiTaskData, dim: int, type_embedding: bool = False, init_std: float = 0.05):
        super().__init__()
        used = list(dict.fromkeys([*data.cat_vocab, *data.seq_vocab]))
        self.tables = nn.ModuleDict({v: nn.Embedding(data.vocab_sizes[v], dim, padding_idx=PAD) for v in used})
        self.cat_vocab = list(data.cat_vocab)
        self.seq_vocab = list(data.seq_vocab)
        self.seq_lengths = data.seq_lengths
        self.dim = dim
        self.init_std = init_std
        self.register_buffer("seq_type", torch.repeat_interleave(
            torch.arange(len(self.seq_lengths)), torch.tensor(self.seq_lengths, dtype=torch.long)), persistent=False)
        self.type_embedding = nn.Embedding(len(self.seq_lengths), dim) if type_embedding and self.seq_lengths else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for table in self.tables.values():
            nn.init.normal_(table.weight, std=self.init_std)
            with torch.no_grad():
                table.weight[PAD].zero_()
        if self.type_embedding is not None:
            nn.init.normal_(self.type_embedding.weight, std=self.init_std)

    @property
    def num_fields(self) -> int:
        return len(self.cat_vocab)

    @property
    def num_seq_types(self) -> int:
        return len(self.seq_lengths)

    def forward(self, batch: Mapping[str, Any]) -> tuple[Tensor, Tensor, Tensor]:
        cat = batch["cat"]
        c = torch.stack([self.tables[v](cat[:, j]) for j, v in enumerate(self.cat_vocab)], dim=1)   # (B, M, d)
        if not self.seq_lengths:
            empty = c.new_zeros(cat.shape[0], 0, self.dim)
            return c, empty, torch.zeros(cat.shape[0], 0, dtype=torch.bool, device=cat.device)
        s = torch.cat([self.tables[v](ids) for v, ids in zip(self.seq_vocab, batch["seq"])], dim=1)  # (B, L, d)
        mask = torch.cat(list(batch["seq"]), dim=1) != PAD                                          # (B, L)
        if self.type_embedding is not None:
            s = s + self.type_embedding(self.seq_type)
        return c, s, mask


class MultiTaskModel(nn.Module):
    """Base of the multi-task rankers: ``forward(batch) -> (B, T)`` logits, one column per task.

    The loss is ``sum_i lambda_i * BCE(sigmoid(logit_i), label_i)`` with ``lambda`` from ``task_weights``
    (default all 1), each BCE averaged over the batch.
    """

    def __init__(self, config: Mapping[str, Any], data: MultiTaskData):
        super().__init__()
        self.tasks = list(data.tasks)
        weights = config.get("task_weights")
        if weights is None:
            weights = [1.0] * len(self.tasks)
        if not isinstance(weights, (list, tuple)) or len(weights) != len(self.tasks):
            raise ValueError(f"task_weights must list one weight per task {self.tasks}, got {weights!r}")
        self.register_buffer("task_weights", torch.tensor([float(w) for w in weights]), persistent=False)

    @property
    def num_tasks(self) -> int:
        return len(self.tasks)

    def compute_loss(self, batch: Mapping[str, Any]) -> tuple[Tensor, Tensor]:
        """Summed weighted BCE and the logits ``(B, T)``."""
        logits = self(batch)
        per_task = F.binary_cross_entropy_with_logits(logits, batch["labels"], reduction="none").mean(0)  # (T,)
        return (per_task * self.task_weights).sum(), logits

    @torch.no_grad()
    def predict(self, batch: Mapping[str, Any]) -> Tensor:
        """Probabilities ``(B, T)``."""
        return torch.sigmoid(self(batch))
