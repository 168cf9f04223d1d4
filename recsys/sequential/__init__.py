"""Sequential recommendation (task ``sequential``): IDNP, SASRec and GRU4Rec on time-ordered histories.

    python run.py --model IDNP --dataset drifting-interest
    python run.py --model SASRec --dataset ml-100k-seq --epochs=50

Importing this package registers the task, its models and its datasets.
"""
from pathlib import Path

from graphattn.registry import register_task

from . import gru4rec, idnp, sasrec  # noqa: F401  (register the models)
from .data import SeqData, register_datasets
from .task import SequentialTask

_HERE = Path(__file__).resolve().parent

register_task("sequential", task=SequentialTask, overall=_HERE / "overall.yaml", model_dir=_HERE / "model",
              dataset_dir=_HERE / "dataset")
register_datasets()

__all__ = ["SeqData", "SequentialTask"]
