"""Recommendation on graphattn: datasets, samplers, models (BPRMF, CKE, KGAT, ...), full-ranking evaluation.

Importing this package registers the ``recsys`` task, its datasets and its models.
"""
from pathlib import Path

from graphattn.registry import register_task

from .data.registry import register_all as _register_datasets
from .task import RecTask

_HERE = Path(__file__).resolve().parent

register_task("recsys", task=RecTask, overall=_HERE / "overall.yaml", model_dir=_HERE / "model",
              dataset_dir=_HERE / "dataset", path_loader_ok=True)
_register_datasets()

from . import models  # noqa: E402  (registers BPRMF, CKE, KGAT)
from . import multitask  # noqa: E402,F401  (task "multitask": INFNet, SharedBottom, MMoE)
from . import sequential  # noqa: E402,F401  (task "sequential": IDNP, SASRec, GRU4Rec)
