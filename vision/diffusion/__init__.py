"""Diffusion models on graphattn's attention layer, and attention-level guidance studies.

Importing this package registers the ``diffusion`` task (:class:`vision.diffusion.task.DiffusionTask`, defaults
in ``vision/diffusion/overall.yaml``, ``model/<Model>.yaml`` and ``dataset/<name>.yaml`` beside it), the
``digits-diffusion`` dataset and the ``DiT`` model. Shared machinery: ``schedule`` (noise schedule, DDPM loss,
DDPM / DDIM steps), ``guidance`` (classifier-free and perturbation guidance in one batched call), ``judge``
(digits classifiers used as objectives), ``images`` (PNG grids). Papers on top: ``pag`` (SoftPAG and
HeadHunter), ``spice_e`` (Spice-E's cross-entity attention), ``asdm`` / ``asdm_unet`` (A-SDM: GRI attention and
the students of the ``UNet`` (``unet``, dataset ``digits16-diffusion``), registered as ``ASDMStudent`` of the
``diffusion-distill`` task in ``distill``). Results: ``docs/results/diffusion.md``.

    python run.py --model DiT --dataset digits-diffusion
"""
from pathlib import Path

from graphattn.registry import register_task

from .task import DiffusionTask

_HERE = Path(__file__).resolve().parent

register_task("diffusion", task=DiffusionTask, overall=_HERE / "overall.yaml", model_dir=_HERE / "model",
              dataset_dir=_HERE / "dataset")

from . import data  # noqa: E402,F401  (registers digits-diffusion)
from . import dit  # noqa: E402,F401  (registers DiT)
from . import unet  # noqa: E402,F401  (registers UNet)
from .distill import DistillTask  # noqa: E402

register_task("diffusion-distill", task=DistillTask, overall=_HERE / "overall.yaml", model_dir=_HERE / "model",
              dataset_dir=_HERE / "dataset")
from . import asdm_unet  # noqa: E402,F401  (registers ASDMStudent)
