r"""CARE Transformer: Mobile-Friendly Linear Visual Transformer via Decoupled Dual Interaction (Zhou, Xu, Cui,
Zhou, Zhang, Hong, Zhang, CVPR 2025, https://arxiv.org/abs/2411.16170; official code
github.com/zhouyuan888888/CARETrans).

CARE-nano: :func:`vision.care.care_nano`, a two-stage :class:`vision.care.CARENet` for 32x32 inputs (stem
4 -> 8x8 tokens at width 32, downsample 2 -> 4x4 tokens at width 64; depths (2, 2); memory m = width / 4; one
linear-attention head per stage; interaction ratios (2, 2) / (4, 4); GAP -> GELU -> LayerNorm -> two linear
heads, averaged). Each CARE block splits its channels into ``[memory | global | local 3x3 | local 7x7]``;
the global slice goes through ELU+1 linear attention, the local ones through depth-wise convolutions, then

.. math::
    F = \mathrm{Inter}_1([G, L_3, L_7]), \qquad Z = \mathrm{Inter}_2([M, F]), \qquad X' = X + \gamma \odot Z

(details in :mod:`vision.care`). The ablation switches of ``experiments/primitives_digits.py --which care``
are config keys: ``split: symmetric`` (R) gives the global branch as many channels as both local branches,
``memory: false`` zeroes the memory slice, ``interaction2: false`` skips the second interaction. README
(3 seeds, 20 epochs, digits upsampled to 32x32): 0.985; symmetric 0.982, no memory 0.983, no Inter_2 0.974.

The model is sized for 32x32 images and refuses other sizes. The digits dataset gives 8x8 images unless told
otherwise, and a dataset's YAML overrides a model's (config layers), so run it with ``--image_size=32``::

    python run.py --model CARENano --dataset digits --image_size=32

Args (``vision/model/CARENano.yaml``):
    split ("asymmetric" | "symmetric"), memory (true), interaction2 (true), layer_scale_init (1e-6).
    From the dataset: ``meta["in_channels"]``, ``meta["image_size"]`` (must be 32), num_classes.

Shapes:
    x (B, C_in, 32, 32) -> logits (B, num_classes).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from graphattn.registry import register_model
from vision.base import VisionData, VisionModel
from vision.care import care_nano

__all__ = ["CARENano"]

IMAGE_SIZE = 32


@register_model("CARENano", task="vision")
class CARENano(VisionModel):
    """CARE-nano image classifier (:func:`vision.care.care_nano`); see the module docstring."""

    def __init__(self, config: Any, data: VisionData) -> None:
        super().__init__(config, data)
        if data.task_type != "classification":
            raise ValueError(f"CARENano is an image classifier; the dataset's task_type is {data.task_type!r}")
        for key in ("in_channels", "image_size"):
            if key not in data.meta:
                raise ValueError(f"CARENano needs meta['{key}'] from the dataset loader")
        size = int(data.meta["image_size"])
        if size != IMAGE_SIZE:
            raise ValueError(f"CARENano is sized for {IMAGE_SIZE}x{IMAGE_SIZE} images (stem 4 -> 8x8 tokens, then 4x4), "
                             f"but dataset '{config['dataset']}' gives {size}x{size}; set --image_size={IMAGE_SIZE} "
                             f"(on digits it upsamples; a model YAML cannot set it, the dataset's default wins)")
        self.split = str(config["split"])
        if self.split not in ("asymmetric", "symmetric"):
            raise ValueError(f"split: expected 'asymmetric' or 'symmetric', got {self.split!r}")
        self.net = care_nano(num_classes=data.num_classes, in_chans=int(data.meta["in_channels"]), split=self.split,
                             memory=bool(config["memory"]), interaction2=bool(config["interaction2"]),
                             layer_scale_init=float(config["layer_scale_init"]))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)
