"""Multi-task ranking (task ``multitask``): INFNet and its baselines on impression data with categorical
fields, behaviour sequences and several binary labels.

Models: ``INFNet``, ``SharedBottom``, ``MMoE``, ``TargetAttention`` (DIN-style diagnostic). Datasets: ``ml-100k-mtl`` (offline default, from recbole's
bundled ml-100k), ``mtl-synthetic`` (the INFNet spec's three-task generator), ``kuairand-pure`` and
``qb-video`` (files put in place by the user), or ``--dataset <folder>`` with FuxiCTR-style CSVs.
"""
from pathlib import Path

from graphattn.registry import register_dataset, register_task

from . import infnet, mmoe, shared_bottom, target_attention  # noqa: F401  (register the models)
from .data import (load_kuairand_config, load_ml100k_mtl_config, load_qb_video_config,
                   load_synthetic_config)
from .task import MultiTaskTask

_HERE = Path(__file__).resolve().parent

register_task("multitask", task=MultiTaskTask, overall=_HERE / "overall.yaml", model_dir=_HERE / "model",
              dataset_dir=_HERE / "dataset", path_loader_ok=True)
register_dataset("ml-100k-mtl", task="multitask", loader=load_ml100k_mtl_config,
                 description="ml-100k impressions (ratings + sampled negatives), tasks watch/like/dislike")
register_dataset("mtl-synthetic", task="multitask", loader=load_synthetic_config,
                 description="INFNet spec's synthetic 3-task data (field cross, sequence overlap, conflict)")
register_dataset("kuairand-pure", task="multitask", loader=load_kuairand_config,
                 description="KuaiRand-Pure click/like/long-view (files under <data_path>/KuaiRand-Pure/data)")
register_dataset("qb-video", task="multitask", loader=load_qb_video_config,
                 description="Tenrec QB-video click/like/follow/share (QB-video.csv under <data_path>/Tenrec)")
