"""Binary text classification with attention, and adversarial training on the attention scores (task
``text_classification``; Kitada & Iyatomi's Attention AT / iAT).

    python run.py --model BiLSTMAttn --dataset planted-cue --at_mode=at --at_epsilon=1

Importing this package registers the task (:class:`sequence.text.task.TextClassificationTask`; defaults in
``sequence/text/overall.yaml``, ``sequence/text/model/<Model>.yaml``, ``sequence/text/dataset/<name>.yaml``),
its dataset (``planted-cue``) and its models (``BiLSTMAttn``, ``CLSTransformer``).
"""
from pathlib import Path

from graphattn.registry import register_task

from .base import TextClassifier
from .data import TextData, TextSplit
from .task import TextClassificationTask

_HERE = Path(__file__).resolve().parent

register_task("text_classification", task=TextClassificationTask, overall=_HERE / "overall.yaml",
              model_dir=_HERE / "model", dataset_dir=_HERE / "dataset")

from . import planted_cue  # noqa: E402,F401  (registers the dataset)
from . import models  # noqa: E402,F401  (registers the models)

__all__ = ["TextClassifier", "TextData", "TextSplit", "TextClassificationTask"]
