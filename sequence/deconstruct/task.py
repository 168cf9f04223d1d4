"""Task ``decon_lm``: next-token language modelling on a token stream (Deconstructing Attention study).

Training: every epoch is ``steps_per_epoch`` optimiser steps, each on ``train_batch_size`` windows of
``lm_context + 1`` tokens at random offsets of the training stream (a generator seeded by ``seed``, saved with
the run). Evaluation: consecutive non-overlapping windows over the first ``lm_eval_tokens`` tokens of the
valid / test stream; metrics ``loss`` (mean cross-entropy, nats), ``ppl`` (its exponential) and ``bpc`` (bits
per token). The optimiser is AdamW with ``adam_beta1``, ``adam_beta2`` (the paper: 0.9, 0.9999) and
``adam_eps``, weight decay on matrices and embeddings only (not on norms), the Trainer's warm-up + cosine schedule.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from graphattn.registry import get_dataset
from graphattn.training import SizedBatches, Task

from .corpus import LMCorpus
from .model import DeconModel

__all__ = ["LMTask", "eval_windows", "evaluate_lm"]


def eval_windows(stream: Tensor, context: int, max_tokens: int) -> Tensor:
    """``(W, context + 1)`` consecutive windows overlapping by one token (each target is scored once)."""
    stream = stream[: max_tokens + 1] if max_tokens > 0 else stream
    w = (stream.numel() - 1) // context
    if w < 1:
        raise ValueError(f"an evaluation split of {stream.numel()} tokens is shorter than one window of "
                         f"lm_context + 1 = {context + 1}")
    idx = torch.arange(w)[:, None] * context + torch.arange(context + 1)[None]
    return stream[idx]


@torch.no_grad()
def evaluate_lm(model: torch.nn.Module, windows: Tensor, batch_size: int, device: torch.device | None = None) -> dict[str, float]:
    """Mean next-token cross-entropy of ``model`` over ``windows`` and its perplexity."""
    total, count = 0.0, 0
    for start in range(0, windows.shape[0], batch_size):
        chunk = windows[start:start + batch_size]
        if device is not None:
            chunk = chunk.to(device)
        logits = model(chunk[:, :-1])
        total += float(torch.nn.functional.cross_entropy(logits.flatten(0, 1), chunk[:, 1:].flatten(), reduction="sum"))
        count += chunk[:, 1:].numel()
    loss = total / count
    return {"loss": loss, "ppl": math.exp(min(loss, 700.0)), "bpc": loss / math.log(2)}


class LMTask(Task):
    model_base = DeconModel

    def __init__(self, config: Mapping[str, Any], data: Any = None) -> None:
        super().__init__(config, data)
        if not isinstance(self.data, LMCorpus):
            raise TypeError(f"task decon_lm needs an LMCorpus, got {type(self.data).__name__}")
        self.context = int(config["lm_context"])
        if self.context < 1:
            raise ValueError(f"lm_context must be >= 1, got {self.context}")
        if self.data.train.numel() <= self.context + 1:
            raise ValueError(f"the training stream ({self.data.train.numel()} tokens) is shorter than lm_context + 1")
        self.generator = torch.Generator().manual_seed(int(config["seed"]))
        limit = int(config["lm_eval_tokens"])
        self.windows = {split: eval_windows(getattr(self.data, split), self.context, limit) for split in ("valid", "test")}

    def load_data(self, config):
        return get_dataset(config["dataset"], "decon_lm").loader(config)

    @property
    def mode(self) -> str:
        return "min"

    def metric_names(self):
        return ["loss", "ppl", "bpc"]

    def optimizers(self, model):
        decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
        rest = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
        groups = [{"params": decay, "weight_decay": float(self.config["weight_decay"])},
                  {"params": rest, "weight_decay": 0.0}]
        betas = (float(self.config["adam_beta1"]), float(self.config["adam_beta2"]))
        opt = torch.optim.AdamW(groups, lr=float(self.config["learning_rate"]), betas=betas,
                                eps=float(self.config["adam_eps"]))
        return {phase: opt for phase in self.phases}

    def sample(self, size: int) -> Tensor:
        """``(size, lm_context + 1)`` training windows at random offsets."""
        starts = torch.randint(0, self.data.train.numel() - self.context, (size,), generator=self.generator)
        return self.data.train[starts[:, None] + torch.arange(self.context + 1)[None]]

    def batches(self, phase):
        steps, size = int(self.config["steps_per_epoch"]), int(self.config["train_batch_size"])
        if steps < 1 or size < 1:
            raise ValueError(f"steps_per_epoch and train_batch_size must be >= 1, got {steps}, {size}")
        return SizedBatches((self.sample(size) for _ in range(steps)), steps)

    def loss(self, model, batch, phase):
        return model.loss(batch)

    def evaluate(self, model, split):
        return evaluate_lm(model, self.windows[split], int(self.config["eval_batch_size"]), self.device)

    def describe(self) -> str:
        return str(self.data)

    def state_dict(self):
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state):
        self.generator.set_state(state["generator"])
