"""The contract between vision datasets, models and the vision task (:mod:`vision.task`).

- A dataset loader is ``loader(config) -> VisionData``.
- A model is ``Model(config, data)``, a subclass of :class:`VisionModel`, registered with
  ``@graphattn.registry.register_model("Name", task="vision")``.

The task only calls ``model.compute_loss(batch)`` while training and ``model.predict(batch)`` while
evaluating, so a model whose batches are not ``(x, y)`` (graphs, skeletons, ...) overrides those two.
See ``vision/CONTRACT.md``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

__all__ = ["VisionData", "VisionModel", "TASK_TYPES", "split_indices", "IGNORE_INDEX"]

TASK_TYPES = ("classification", "regression")
IGNORE_INDEX = -100  # classification targets equal to this are skipped by the loss and the metrics


@dataclass
class VisionData:
    """What a vision dataset loader returns.

    Args:
        train, valid, test: torch Datasets. Without ``collate_fn`` they yield ``(x, y)`` pairs that the
            default collate stacks; with it, anything the model's ``compute_loss`` / ``predict`` read.
        num_classes: number of classes (classification) or of regression outputs (usually 1).
        meta: free-form facts models may read, e.g. ``in_channels``, ``image_size``, ``class_names``.
        collate_fn: batches examples for all three splits; ``None`` = torch's default collate.
        task_type: ``"classification"`` or ``"regression"``; decides the default loss and metrics.
    """

    train: Dataset
    valid: Dataset
    test: Dataset
    num_classes: int
    meta: dict[str, Any] = field(default_factory=dict)
    collate_fn: Callable[[list], Any] | None = None
    task_type: str = "classification"

    def __post_init__(self) -> None:
        for name in ("train", "valid", "test"):
            split = getattr(self, name)
            if not hasattr(split, "__getitem__") or not hasattr(split, "__len__"):
                raise TypeError(f"VisionData.{name}: expected a map-style torch Dataset (with __len__ and __getitem__), got {type(split).__name__}")
        if isinstance(self.num_classes, bool) or not isinstance(self.num_classes, int) or self.num_classes < 1:
            raise ValueError(f"VisionData.num_classes: expected an int >= 1, got {self.num_classes!r}")
        if self.task_type not in TASK_TYPES:
            raise ValueError(f"VisionData.task_type: expected one of {', '.join(TASK_TYPES)}, got {self.task_type!r}")
        if not isinstance(self.meta, dict):
            raise TypeError(f"VisionData.meta: expected a dict, got {type(self.meta).__name__}")
        if self.collate_fn is not None and not callable(self.collate_fn):
            raise TypeError(f"VisionData.collate_fn: expected a callable or None, got {type(self.collate_fn).__name__}")


class VisionModel(nn.Module):
    """Base class of vision models.

    Subclasses implement ``forward(x) -> logits`` (``(B, num_classes)``; regression: ``(B,)`` or
    ``(B, num_outputs)``) and may override:

    - ``aux_loss()``: an extra loss added in ``compute_loss`` (e.g. a load-balancing loss the forward pass
      stored); default 0.
    - ``compute_loss(batch) -> (loss, predictions, targets)``: default cross entropy (with the config's
      ``label_smoothing``, ignoring targets equal to ``IGNORE_INDEX``) or MSE on ``(x, y)``, plus
      ``aux_loss()``.
    - ``predict(batch) -> (predictions, targets)``: default ``(self(x), y)``.

    Args:
        config: the run's :class:`graphattn.config.Config` (or a dict in tests).
        data: the :class:`VisionData` the model will see; ``num_classes`` and ``task_type`` are kept.
    """

    def __init__(self, config: Any, data: VisionData) -> None:
        super().__init__()
        if not isinstance(data, VisionData):
            raise TypeError(f"{type(self).__name__}: data must be a vision.base.VisionData, got {type(data).__name__}")
        self.num_classes = data.num_classes
        self.task_type = data.task_type
        get = config.get if hasattr(config, "get") else (lambda k, d=None: d)
        self.label_smoothing = float(get("label_smoothing", 0.0) or 0.0)
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing: expected a float in [0, 1), got {self.label_smoothing}")

    def forward(self, x: Any) -> torch.Tensor:
        raise TypeError(f"{type(self).__name__} must define forward(x)")

    def aux_loss(self) -> torch.Tensor:
        """Extra loss terms; 0 unless a subclass overrides it."""
        param = next(self.parameters(), None)
        return torch.zeros((), device=param.device if param is not None else None)

    def compute_loss(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x, y = batch
        out = self(x)
        if self.task_type == "classification":
            loss = F.cross_entropy(out, y, label_smoothing=self.label_smoothing, ignore_index=IGNORE_INDEX)
        else:
            loss = F.mse_loss(out.reshape(y.shape).float(), y.float())
        return loss + self.aux_loss(), out.detach(), y

    def predict(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = batch
        return self(x), y


def split_indices(
    n: int,
    valid_ratio: float,
    test_ratio: float,
    seed: int,
    labels: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded train/valid/test index split; stratified by ``labels`` when given.

    Returns three sorted, disjoint index arrays covering ``range(n)``.
    """
    if not (0.0 <= valid_ratio < 1.0 and 0.0 <= test_ratio < 1.0 and valid_ratio + test_ratio < 1.0):
        raise ValueError(f"valid_ratio and test_ratio must be in [0, 1) with a sum < 1, got {valid_ratio} and {test_ratio}")
    rng = np.random.default_rng(seed)
    groups = [np.arange(n)] if labels is None else [np.flatnonzero(labels == c) for c in np.unique(labels)]
    train, valid, test = [], [], []
    for idx in groups:
        idx = rng.permutation(idx)
        n_test = int(round(len(idx) * test_ratio))
        n_valid = int(round(len(idx) * valid_ratio))
        test.append(idx[:n_test])
        valid.append(idx[n_test : n_test + n_valid])
        train.append(idx[n_test + n_valid :])
    return tuple(np.sort(np.concatenate(part)).astype(np.int64) for part in (train, valid, test))  # type: ignore[return-value]
