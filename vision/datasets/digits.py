"""scikit-learn's hand-written digits as a vision dataset (bundled with scikit-learn, no download).

1,797 grey 8x8 images of the digits 0-9, pixel values 0..16 scaled to [0, 1] and then standardised with
the training split's mean and standard deviation. ``image_size`` > 8 upsamples bilinearly, so that
patch-based models get a useful number of tokens (32 px with patch 4 -> 64 tokens). The split is stratified
by class and seeded by ``split_seed``.

``augment_shift`` > 0 translates each training image by a random offset of up to that many pixels (zero
padding) every time it is read; valid and test images are never shifted.

Keys (``vision/dataset/digits.yaml``): image_size, valid_ratio, test_ratio, split_seed, augment_shift.
Yields ``(x (1, S, S) float32, y int64)``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, TensorDataset

from graphattn.registry import register_dataset
from vision.base import VisionData, split_indices

__all__ = ["load_digits_data", "ShiftedImages"]


class ShiftedImages(Dataset):
    """``(x, y)`` pairs whose image is shifted by a random offset in ``[-shift, shift]`` pixels per axis; the
    uncovered border takes the value ``fill`` (the standardised background)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, shift: int, fill: float = 0.0):
        self.images, self.labels, self.shift, self.fill = images, labels, int(shift), float(fill)
        self.tensors = (images, labels)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.shift
        padded = F.pad(self.images[i], (s, s, s, s), value=self.fill)           # (C, S + 2s, S + 2s)
        dy, dx = (int(v) for v in torch.randint(0, 2 * s + 1, (2,)))
        size = self.images.shape[-1]
        return padded[:, dy : dy + size, dx : dx + size], self.labels[i]


def load_digits_data(config: Any) -> VisionData:
    from sklearn.datasets import load_digits

    size = int(config["image_size"])
    if size < 8:
        raise ValueError(f"image_size: expected an int >= 8 for the 8x8 digits, got {size}")
    bunch = load_digits()
    images = torch.from_numpy(bunch.images.astype(np.float32) / 16.0).unsqueeze(1)  # (N, 1, 8, 8)
    if size != 8:
        images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    labels = torch.from_numpy(bunch.target.astype(np.int64))
    train, valid, test = split_indices(len(labels), float(config["valid_ratio"]), float(config["test_ratio"]), int(config["split_seed"]), labels=bunch.target)
    mean, std = images[train].mean(), images[train].std()
    images = (images - mean) / std
    meta = {"in_channels": 1, "image_size": size, "class_names": [str(d) for d in range(10)], "mean": float(mean), "std": float(std)}
    shift = int(config["augment_shift"])
    if shift < 0:
        raise ValueError(f"augment_shift: expected an int >= 0, got {shift}")
    return VisionData(
        train=ShiftedImages(images[train], labels[train], shift, fill=float(-mean / std)) if shift else TensorDataset(images[train], labels[train]),
        valid=TensorDataset(images[valid], labels[valid]),
        test=TensorDataset(images[test], labels[test]),
        num_classes=10,
        meta=meta,
    )


register_dataset("digits", task="vision", loader=load_digits_data, description="scikit-learn 8x8 digits (10 classes), upsampled to image_size")
