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

    def load_data(self, config):
        from graphattn.registry import get_dataset
        entry = get_dataset(config["dataset"], "circuits")
        if entry.loader is None:
            raise ValueError(f"dataset '{config['dataset']}': task circuits generates its prompts; name a registered dataset")
        return entry.loader(config)

    @property
    def mode(self) -> str:
        return "min" if self.metric.endswith("loss") else "max"
