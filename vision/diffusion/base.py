"""The model base of the ``diffusion`` task: a class-conditional noise predictor ``eps(x_t, t, y)``.

Class ``num_classes`` is the null label (classifier-free guidance drops the label to it while training).
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor, nn

from graphattn.attention import GraphAttention

from .data import DiffusionData
from .schedule import NoiseSchedule

__all__ = ["DiffusionModel"]


class DiffusionModel(nn.Module):
    """Base class: subclasses define ``forward(x_t (B, C, S, S), t (B,), y (B,)) -> eps (B, C, S, S)``.

    Args (config keys, defaults in ``vision/diffusion/overall.yaml``): timesteps, noise_schedule.
    """

    def __init__(self, config: Mapping[str, Any], data: DiffusionData) -> None:
        super().__init__()
        if not isinstance(data, DiffusionData):
            raise TypeError(f"{type(self).__name__}: data must be a vision.diffusion.data.DiffusionData, "
                            f"got {type(data).__name__}")
        self.num_classes = data.num_classes
        self.in_channels = int(data.meta.get("in_channels", 1))
        self.image_size = int(data.meta["image_size"])
        self.schedule = NoiseSchedule(int(config["timesteps"]), str(config["noise_schedule"]))

    @property
    def null_class(self) -> int:
        return self.num_classes

    def forward(self, x_t: Tensor, t: Tensor, y: Tensor) -> Tensor:
        raise TypeError(f"{type(self).__name__} must define forward(x_t, t, y)")

    def loss(self, batch: Mapping[str, Tensor]) -> Tensor:
        """DDPM loss of a batch ``{"x", "y", "t", "noise", "drop"}`` (``drop`` = use the null label)."""
        y = torch.where(batch["drop"], torch.full_like(batch["y"], self.null_class), batch["y"])
        return self.schedule.loss(lambda x_t, t: self(x_t, t, y), batch["x"], batch["t"], batch["noise"])

    def attention_layers(self) -> list[GraphAttention]:
        """The model's attention layers in forward order (layer index l of a (layer, head) pair)."""
        return [m for m in self.modules() if isinstance(m, GraphAttention)]
