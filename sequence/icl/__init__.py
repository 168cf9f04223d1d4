"""In-context learning studies (task ``icl``): online training on freshly sampled prompts.

    python run.py --model ICLRegression --dataset icl-regression [--icl_heads=2 ...]
    python run.py --model InductionNet --dataset icl-bursty [--icl_classes=512 ...]

Models: ``ICLRegression`` (one layer of multi-head softmax attention, He et al. 2025) and ``InductionNet``
(two-layer attention-only network, Reddy 2024). Datasets: ``icl-regression``, ``icl-bursty``. Defaults in
``sequence/icl/overall.yaml``, ``model/<Model>.yaml``, ``dataset/<name>.yaml``.
"""
from pathlib import Path

from graphattn.registry import register_task

from .base import ICLModel
from .task import ICLTask

_HERE = Path(__file__).resolve().parent

register_task("icl", task=ICLTask, overall=_HERE / "overall.yaml", model_dir=_HERE / "model",
              dataset_dir=_HERE / "dataset")

from . import bursty_data, regression_data  # noqa: E402,F401  (register the datasets)
from .induction import InductionNet  # noqa: E402
from .minimal import InductionMinimal  # noqa: E402,F401  (three-scalar minimal induction head)
from .regression import ICLRegression  # noqa: E402

__all__ = ["ICLModel", "ICLTask", "ICLRegression", "InductionNet"]
