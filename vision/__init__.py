"""Vision and skeleton models built on graphattn's attention primitives.

Importing this package registers the ``vision`` task (:class:`vision.task.VisionTask`, defaults in
``vision/overall.yaml``, ``vision/model/<Model>.yaml`` and ``vision/dataset/<name>.yaml``) and every
vision model and dataset below. How to add one: ``vision/CONTRACT.md``.
"""

from pathlib import Path

from graphattn.registry import register_task
from vision.task import VisionTask

_HERE = Path(__file__).resolve().parent

register_task(
    "vision",
    task=VisionTask,
    overall=_HERE / "overall.yaml",
    model_dir=_HERE / "model",
    dataset_dir=_HERE / "dataset",
)

# datasets (each module registers its names on import)
from vision.datasets import digits  # noqa: E402,F401
from vision.datasets import gaze_objects  # noqa: E402,F401
from vision.datasets import parts  # noqa: E402,F401

# models
from vision import dependency_vit  # noqa: E402,F401
from vision import impn  # noqa: E402,F401
from vision.datasets import skeleton  # noqa: E402,F401
from vision import ista_net, late_fusion_skeleton  # noqa: E402,F401
from vision.datasets import quality, shapes_grounding  # noqa: E402,F401
from vision import maniqa, overlock, sab, tcpa  # noqa: E402,F401
from vision import care_nano, moh_vit, na_vit  # noqa: E402,F401
from vision import diffusion  # noqa: E402,F401  (the diffusion task, DiT, SoftPAG/HeadHunter)
