"""Sequence models and attention studies built on graphattn's attention primitives (task ``sequence``).

    python run.py --model PointerNet --dataset convex-hull [--key=value ...]

Importing this package registers the ``sequence`` task (:class:`sequence.task.SequenceTask`; defaults in
``sequence/overall.yaml``, ``sequence/model/<Model>.yaml``, ``sequence/dataset/<name>.yaml``), its datasets
and its models. Adding a model: ``docs/adding-a-model.md``.
"""
from pathlib import Path

from graphattn.registry import register_task

from .base import PointerModel
from .data import SequenceData
from .task import SequenceTask

_HERE = Path(__file__).resolve().parent

register_task("sequence", task=SequenceTask, overall=_HERE / "overall.yaml", model_dir=_HERE / "model",
              dataset_dir=_HERE / "dataset")

# datasets (each module registers its names on import)
from .data import convex_hull  # noqa: E402,F401
from .data import tsp  # noqa: E402,F401
from .data import delaunay  # noqa: E402,F401

# models (sequence/models/__init__.py imports each model file, which registers it)
from . import models  # noqa: E402,F401
from . import dsf  # noqa: E402,F401  (Dynamical Systems Framework: task mqar, DSFMixer)
from . import text  # noqa: E402,F401  (task text_classification: Attention AT / iAT, BiLSTMAttn, CLSTransformer)
from . import icl  # noqa: E402,F401  (task icl: ICLRegression, InductionNet)
from . import interactcomp  # noqa: E402,F401  (task interactcomp: InteractCompPolicy)
from . import circuits  # noqa: E402,F401  (task circuits: CircuitGPT)
from . import deconstruct  # noqa: E402,F401  (task decon_lm: DeconLM, Deconstructing Attention)

__all__ = ["PointerModel", "SequenceData", "SequenceTask"]
