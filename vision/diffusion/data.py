"""Images for the ``diffusion`` task: scikit-learn's bundled 8x8 digits, pixels scaled to [-1, 1].

The ``vision`` task's ``digits`` dataset standardises pixels for classifiers; a diffusion model wants a
fixed range (the sampler clips its x0 estimate to [-1, 1]), so this loader reads the same images and the
same stratified split (``split_seed``) but scales ``pixel / 8 - 1``. ``image_size`` > 8 upsamples bilinearly.

Keys (``vision/diffusion/dataset/digits-diffusion.yaml``): image_size, valid_ratio, test_ratio, split_seed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from graphattn.registry import register_dataset
from vision.base import split_indices

__all__ = ["DiffusionData", "load_digits_diffusion"]


@dataclass
class DiffusionData:
    """Class-labelled images per split: ``splits[name] = (x (N, C, S, S) in [-1, 1], y (N,) int64)``."""

    splits: dict[str, tuple[Tensor, Tensor]]
    num_classes: int
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("train", "valid", "test"):
            if name not in self.splits:
                raise ValueError(f"DiffusionData: missing split '{name}' (got {sorted(self.splits)})")
            x, y = self.splits[name]
            if x.dim() != 4 or y.shape != (x.shape[0],):
                raise ValueError(f"DiffusionData.{name}: expected x (N, C, S, S) and y (N,), got "
                                 f"{tuple(x.shape)} and {tuple(y.shape)}")

    def __getitem__(self, split: str) -> tuple[Tensor, Tensor]:
        return self.splits[split]


def load_digits_diffusion(config: Any) -> DiffusionData:
    from sklearn.datasets import load_digits

    size = int(config["image_size"])
    if size < 8:
        raise ValueError(f"image_size: expected an int >= 8 for the 8x8 digits, got {size}")
    bunch = load_digits()
    images = torch.from_numpy(bunch.images.astype(np.float32) / 8.0 - 1.0).unsqueeze(1)   # (N, 1, 8, 8)
    if size != 8:
        images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    labels = torch.from_numpy(bunch.target.astype(np.int64))
    parts = split_indices(len(labels), float(config["valid_ratio"]), float(config["test_ratio"]),
                          int(config["split_seed"]), labels=bunch.target)
    splits = {name: (images[idx], labels[idx]) for name, idx in zip(("train", "valid", "test"), parts)}
    return DiffusionData(splits, num_classes=10, meta={"in_channels": 1, "image_size": size})


register_dataset("digits-diffusion", task="diffusion", loader=load_digits_diffusion,
                 description="scikit-learn 8x8 digits in [-1, 1] for diffusion models (10 classes)")
register_dataset("digits16-diffusion", task=("diffusion", "diffusion-distill"), loader=load_digits_diffusion,
                 description="scikit-learn digits upsampled (bilinear) to 16x16, in [-1, 1], for the UNet (10 classes)")
