"""InteractComp in miniature: asking instead of guessing (Deng et al., arXiv 2510.24668).

A generated target / distractor knowledge base (:mod:`.kb`), the search / ask / answer harness with its
grader and metrics (:mod:`.env`), scripted policies (:mod:`.policies`) and a learned policy built from the
core's attention (:mod:`.model`) trained by imitation through the Trainer::

    python run.py --model InteractCompPolicy --dataset interactcomp

Importing this package registers the ``interactcomp`` task (defaults in ``sequence/interactcomp/overall.yaml``,
``model/<Model>.yaml``, ``dataset/<name>.yaml``), its dataset and its model.
"""
from pathlib import Path

from graphattn.registry import register_task

from .data import InteractCompData, load_interactcomp
from .env import Responder, SearchEngine, expected_calibration_error, grade, run_episodes, summarise
from .kb import Item, KnowledgeBase, make_items, make_knowledge_base
from .model import InteractCompPolicy
from .policies import AnswerOnly, InfoGainAsker, OverConfident, SearchOnly
from .task import InteractCompTask

_HERE = Path(__file__).resolve().parent

register_task("interactcomp", task=InteractCompTask, overall=_HERE / "overall.yaml", model_dir=_HERE / "model",
              dataset_dir=_HERE / "dataset")

__all__ = ["InteractCompData", "load_interactcomp", "Responder", "SearchEngine", "expected_calibration_error",
           "grade", "run_episodes", "summarise", "Item", "KnowledgeBase", "make_items", "make_knowledge_base",
           "InteractCompPolicy", "AnswerOnly", "InfoGainAsker", "OverConfident", "SearchOnly", "InteractCompTask"]
