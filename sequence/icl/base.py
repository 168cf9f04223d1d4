"""What task ``icl`` expects from a model: :class:`ICLModel`.

A model is built as ``Model(config, data)`` and implements

- ``loss(batch) -> (loss, parts)``: the training objective of one batch of the data's sampler;
- ``evaluate(batch) -> {metric: value}``: metrics of one evaluation batch (the task prefixes them with the
  evaluation set's name, e.g. ``ic_accuracy``);
- optionally ``diagnostics() -> {name: value}``: weight-space read-outs logged at every evaluation.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

__all__ = ["ICLModel"]


class ICLModel(nn.Module):
    """Base class of task ``icl`` (see the module docstring)."""

    data_kind: str = ""   # "regression" | "classification": the data the model reads

    def __init__(self, config: Mapping[str, Any], data: Any) -> None:
        super().__init__()
        kind = getattr(data, "kind", None)
        if self.data_kind and kind != self.data_kind:
            raise ValueError(f"{type(self).__name__} reads {self.data_kind} prompts, but dataset "
                             f"'{config['dataset']}' gives {kind or type(data).__name__} data")

    def loss(self, batch: Mapping[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        raise NotImplementedError

    def evaluate(self, batch: Mapping[str, Tensor]) -> dict[str, float]:
        raise NotImplementedError

    def diagnostics(self) -> dict[str, float]:
        return {}
