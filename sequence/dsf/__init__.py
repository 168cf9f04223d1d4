"""The Dynamical Systems Framework (Sieber et al., NeurIPS 2024): attention, selective SSMs and gated RNNs
as one linear time-varying system (:mod:`sequence.dsf.system`), the trainable mixers built on it
(:mod:`sequence.dsf.models`) and the multi-query associative recall task ``mqar`` they are compared on.

    python run.py --model DSFMixer --dataset mqar --variant=linear --state_expansion=16

Importing this package registers the task ``mqar`` (defaults in ``sequence/dsf/overall.yaml``,
``model/DSFMixer.yaml``, ``dataset/mqar.yaml``), the dataset ``mqar`` and the model ``DSFMixer``.
"""
from pathlib import Path

from graphattn.registry import register_dataset, register_task

from .models import DSFMixer, RecallModel
from .mqar import load_mqar
from .system import DSF
from .task import RecallTask

_HERE = Path(__file__).resolve().parent

register_task("mqar", task=RecallTask, overall=_HERE / "overall.yaml", model_dir=_HERE / "model",
              dataset_dir=_HERE / "dataset")
register_dataset("mqar", task="mqar", loader=load_mqar,
                 description="Zoology multi-query associative recall, generated (keys, values, power-law query gaps)")

__all__ = ["DSF", "DSFMixer", "RecallModel", "RecallTask"]
