"""Task ``sequence``: supervised pointer outputs (convex hull, Delaunay triangulation, TSP).

Per epoch one pass over the training split in an order drawn from a generator the task owns (seeded by
``seed``, saved with the run so a resumed run continues exactly), through the model's teacher-forced
:meth:`~sequence.base.PointerModel.loss`. Evaluation decodes every instance (greedily, or by beam search
when ``beam_size`` > 1) with the ``decode_mask`` rule (:mod:`sequence.masks`) and reports ``accuracy`` (the
whole output, stop included, equals the target) plus the metrics of the dataset's
:class:`~sequence.data.base.PointerProblem`; a metric the problem lists in ``lower_is_better`` (TSP's tour
length) makes the run keep the epoch with the lowest value.
With ``train_mask`` the loss normalises each step over what the ``decode_mask`` rule allows (not the paper).
Keys: train_batch_size, eval_batch_size, decode_mask, beam_size, train_mask, valid_metric.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from graphattn.registry import get_dataset
from graphattn.training import SizedBatches, Task, move_to

from .base import PointerModel
from .data.base import PAD, STOP, SequenceData
from .masks import check_mask_name

__all__ = ["SequenceTask", "load_data", "trim_prediction"]


def load_data(config: Mapping[str, Any]) -> SequenceData:
    entry = get_dataset(config["dataset"], "sequence")
    if entry.loader is None:
        raise ValueError(f"dataset '{config['dataset']}' is a directory; the sequence task reads registered datasets "
                         "(point a dataset's file keys, e.g. hull_test_file, at your files)")
    data = entry.loader(config)
    if not isinstance(data, SequenceData):
        raise TypeError(f"loader of dataset '{config['dataset']}' returned {type(data).__name__}, expected "
                        "sequence.data.SequenceData")
    return data


def trim_prediction(row: list[int]) -> list[int]:
    """A decoded row up to and including its first stop (the whole row when it never stopped)."""
    out = []
    for v in row:
        if v == PAD:
            break
        out.append(v)
        if v == STOP:
            break
    return out


class SequenceTask(Task):
    model_base = PointerModel

    def __init__(self, config: Mapping[str, Any], data: SequenceData | None = None) -> None:
        self.mask_rule = check_mask_name(config["decode_mask"])   # before the (possibly slow) data loading
        self.beam_size = config["beam_size"]
        if isinstance(self.beam_size, bool) or not isinstance(self.beam_size, int) or self.beam_size < 1:
            raise ValueError(f"beam_size: expected an int >= 1 (1 = greedy decoding), got {self.beam_size!r}")
        super().__init__(config, data)
        self.generator = torch.Generator().manual_seed(int(config["seed"]))

    def load_data(self, config):
        return load_data(config)

    def describe(self) -> str:
        how = "greedy" if self.beam_size == 1 else f"beam search (beam {self.beam_size})"
        return f"{self.data}; {how} decoding, mask '{self.mask_rule}'"

    @property
    def mode(self) -> str:
        return "min" if self.metric in self.data.problem.lower_is_better else "max"

    def metric_names(self) -> list[str]:
        return ["accuracy", *self.data.problem.metric_names]

    def batches(self, phase: str) -> SizedBatches:
        split, size = self.data.train, int(self.config["train_batch_size"])
        order = torch.randperm(len(split), generator=self.generator)
        chunks = order.split(size)
        return SizedBatches((split.batch(c) for c in chunks), math.ceil(len(split) / size))

    def loss(self, model: PointerModel, batch, phase: str):
        return model.loss(batch, self.mask_rule if self.config["train_mask"] else None)

    def predict(self, model: PointerModel, split: str) -> list[list[int]]:
        """Decoded outputs of every instance of ``split`` (each up to its stop)."""
        data, size = self.data.split(split), int(self.config["eval_batch_size"])
        out: list[list[int]] = []
        for index in torch.arange(len(data)).split(size):
            batch = move_to(data.batch(index), self.device)
            steps = self.data.problem.max_steps(int(batch["points"].shape[1]))
            if self.beam_size == 1:
                rows = model.decode(batch, steps, self.mask_rule)
            else:
                rows = model.decode_beam(batch, steps, self.mask_rule, self.beam_size)
            rows = rows.cpu().tolist()
            out.extend(trim_prediction(r) for r in rows)
        return out

    def evaluate(self, model: PointerModel, split: str) -> dict[str, float]:
        data = self.data.split(split)
        predictions, targets = self.predict(model, split), data.target_list()
        accuracy = sum(p == t for p, t in zip(predictions, targets)) / len(targets)
        return {"accuracy": accuracy,
                **self.data.problem.evaluate(data.point_list(), predictions, targets)}

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.generator.set_state(state["generator"])
