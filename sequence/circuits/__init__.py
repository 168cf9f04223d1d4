"""Circuit component reuse (Merullo, Eickhoff, Pavlick, ICLR 2024) at small scale (task ``circuits``).

    python run.py --model CircuitGPT --dataset circuit-mix [--circ_layers=4 ...]

A GPT-2-style decoder built from GraphAttention (``CircuitGPT``) trained from scratch on IOI-like,
Colored-Objects-like and greater-than prompts (``circuit-mix``); ``experiments/circuit_reuse.py`` path-patches
it with :func:`graphattn.interpret.path_patching`. Defaults in ``sequence/circuits/overall.yaml``,
``model/CircuitGPT.yaml``, ``dataset/circuit-mix.yaml``.
"""
from pathlib import Path

from graphattn.registry import register_task

from .model import CircuitGPT, CircuitModel, logit_diff
from .task import CircuitTask

_HERE = Path(__file__).resolve().parent

register_task("circuits", task=CircuitTask, overall=_HERE / "overall.yaml", model_dir=_HERE / "model",
              dataset_dir=_HERE / "dataset")

from . import data  # noqa: E402,F401  (registers circuit-mix)

__all__ = ["CircuitGPT", "CircuitModel", "CircuitTask", "logit_diff"]
