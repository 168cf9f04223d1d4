"""LMEye in miniature (Li et al., arXiv 2305.03701): a frozen LM requests the visual information it needs.

:mod:`.data` (2x2 digit grids, templated questions, the oracle text task), :mod:`.model` (the tiny causal LM,
the digit CNN, the static baseline and LMEye's request-based interaction), :mod:`.train` (the stages through
the Trainer). The experiment: ``experiments/lmeye.py``. Nothing here is registered with ``run.py``: the
pipeline has three stages (LM, CNN, mapping) that the experiment runs in order.
"""
from .data import QUESTION_TYPES, Scenes, canvas, digit_images, layout, make_scenes
from .model import LMEye, DigitCNN, StaticVisual, TinyCausalLM, freeze

__all__ = ["QUESTION_TYPES", "Scenes", "canvas", "digit_images", "layout", "make_scenes", "LMEye", "DigitCNN",
           "StaticVisual", "TinyCausalLM", "freeze"]
