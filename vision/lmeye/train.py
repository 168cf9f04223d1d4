"""Training the LMEye miniature through the one Trainer: the text LM, the digit CNN, the visual mappings.

Each stage is a small :class:`~graphattn.training.Task` over in-memory tensors (shuffled by a generator the
task owns, judged by validation accuracy); :func:`fit` runs it with the core config plus overrides and
returns the best epoch's model. Evaluation of a question-answering model reports accuracy per question type
(answers restricted to the answer tokens).
"""
from __future__ import annotations

import sys
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from graphattn.config import CORE_OVERALL, load_yaml
from graphattn.training import MemoryRun, SizedBatches, Task, Trainer

from .data import QUESTION_TYPES, Scenes, answer_tokens, canvas, layout

__all__ = ["StageTask", "fit", "lm_loss", "visual_loss", "per_type_accuracy", "cnn_loss"]

_ANSWERS = torch.tensor(answer_tokens())


def _restrict(logits: torch.Tensor) -> torch.Tensor:
    """Logits with every non-answer token at -inf."""
    keep = torch.full_like(logits, float("-inf"))
    keep[:, _ANSWERS] = 0.0
    return logits + keep


class StageTask(Task):
    """``data``: ``{"train": n_train, "valid": ..., "test": ...}`` sizes plus ``loss(model, idx, split)`` and
    ``evaluate(model, split)`` callables; batches are index tensors into the training split."""

    fused_optimizer = False
    metric = "accuracy"

    def __init__(self, config, sizes: dict[str, int], loss: Callable, evaluate: Callable, seed: int):
        super().__init__(config, sizes)
        self._loss, self._evaluate = loss, evaluate
        self.generator = torch.Generator().manual_seed(seed)

    def batches(self, phase):
        n, size = self.data["train"], int(self.config["train_batch_size"])
        chunks = torch.randperm(n, generator=self.generator).split(size)
        return SizedBatches(iter(chunks), len(chunks))

    def loss(self, model, batch, phase):
        return self._loss(model, batch), {}

    def evaluate(self, model, split):
        return self._evaluate(model, split)

    def state_dict(self):
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state):
        self.generator.set_state(state["generator"])


def fit(model: nn.Module, task_args: dict[str, Any], epochs: int, lr: float, seed: int, batch: int = 128) -> nn.Module:
    """Train ``model`` (its trainable parameters) with AdamW and a one-cycle schedule; returns it with the weights
    of its best validation epoch."""
    config = {**load_yaml(CORE_OVERALL), "epochs": epochs, "stopping_step": epochs, "optimizer": "adamw",
              "learning_rate": lr, "weight_decay": 0.01, "scheduler": "onecycle", "train_batch_size": batch,
              "device": "cpu", "show_progress": sys.stderr.isatty(), "seed": seed, "log_level": "WARNING"}
    torch.manual_seed(seed)
    task = StageTask(config, seed=seed, **task_args)
    trainer = Trainer(config, task, model, run=MemoryRun())
    trainer.train()
    model.load_state_dict(trainer.run.load("best.pt")["model"])
    return model


def lm_loss(scenes: dict[str, Scenes]):
    """(loss, evaluate) of the text task: cross entropy of the answer at the answer slot, oracle facts in."""
    ans = layout()["answer"]

    def loss(model, idx):
        s = scenes["train"].subset(idx)
        return F.cross_entropy(model(model.embed(s.tokens))[1][:, ans], s.answer)

    def evaluate(model, split):
        s = scenes[split]
        logits = model(model.embed(s.tokens))[1][:, ans]
        return per_type_accuracy(logits, s)

    return loss, evaluate


def visual_loss(scenes: dict[str, Scenes], images: torch.Tensor, cnn: nn.Module):
    """(loss, evaluate, features) of a visual model; the frozen ``cnn``'s region and global features of every
    scene are computed once (``model.from_features(regions, global, question) -> answer logits``)."""
    with torch.no_grad():
        feats = {k: cnn.eval().regions(canvas(images, s.image_ids)) for k, s in scenes.items()}

    def loss(model, idx):
        s = scenes["train"].subset(idx)
        regions, glob = feats["train"]
        return F.cross_entropy(model.from_features(regions[idx], glob[idx], s.question), s.answer)

    def evaluate(model, split):
        return per_type_accuracy(model.from_features(*feats[split], scenes[split].question), scenes[split])

    return loss, evaluate, feats


def cnn_loss(images: torch.Tensor, labels: np.ndarray, pools: dict[str, np.ndarray]):
    y = torch.as_tensor(labels)

    def loss(model, idx):
        i = torch.as_tensor(pools["train"])[idx]
        return F.cross_entropy(model(images[i]), y[i])

    def evaluate(model, split):
        i = torch.as_tensor(pools[split])
        return {"accuracy": float((model(images[i]).argmax(-1) == y[i]).float().mean())}

    return loss, evaluate


def per_type_accuracy(logits: torch.Tensor, scenes: Scenes) -> dict[str, float]:
    """``accuracy`` overall and ``accuracy_<type>`` per question type (answers restricted to answer tokens)."""
    hit = (_restrict(logits).argmax(-1) == scenes.answer).float()
    out = {"accuracy": float(hit.mean())}
    for t, name in enumerate(QUESTION_TYPES):
        sel = scenes.qtype == t
        out[f"accuracy_{name}"] = float(hit[sel].mean()) if sel.any() else float("nan")
    return out
