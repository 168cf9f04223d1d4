"""Task ``circuits``: online training on freshly sampled prompts of the circuit-reuse study.

The same loop as task ``icl`` (:class:`sequence.icl.task.ICLTask`: ``steps_per_epoch`` steps on fresh
batches from the data's sampler, evaluation on fixed prompt sets, one per study task), with its own model
base class. Metrics are ``<task>_accuracy`` and ``<task>_logit_diff`` for ioi, colored_objects, greater_than.
"""
from __future__ import annotations

from sequence.icl.task import ICLTask

from .model import CircuitModel

__all__ = ["CircuitTask"]


class CircuitTask(ICLTask):
    model_base = CircuitModel
    task_name = "circuits"

    @property
    def mode(self) -> str:
        return "min" if self.metric.endswith("loss") else "max"
