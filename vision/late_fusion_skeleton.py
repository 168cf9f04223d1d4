"""Late-fusion skeleton baseline: one encoder per entity, features concatenated at the end.

The baseline ISTA-Net argues against (Wen et al., "Interactive Spatiotemporal Token Attention Network for
Skeleton-based General Interactive Action Recognition", IROS 2023, https://arxiv.org/abs/2307.07469,
Sec. I: multi-entity methods that model each entity separately and fuse late). It is not a model from the
paper but the spec's control: every entity goes through the same temporal ConvNet over all its joints,
is averaged over time, and the E vectors are concatenated (in entity order) for an MLP classifier:

.. math::
    h_e = \\operatorname{mean}_t \\mathrm{TCN}(x_{:, :, :, e}),\\qquad
    \\mathrm{logits} = W_2\\,\\mathrm{ReLU}(W_1 [h_1 \\| \\dots \\| h_E])

So the entities only meet after time pooling: relations in *when* they move (e.g. mirrored vs
out-of-phase gestures) are invisible to it.

Args (config keys, ``vision/model/LateFusionSkeleton.yaml``):
    late_fusion_hidden: TCN and MLP width (64).
    late_fusion_layers: temporal conv layers (3), kernel ``late_fusion_kernel`` (5, odd).
    dropout (0.0), label_smoothing (0.1), entity_rearrangement (true: random entity order per training
    sample, as for ISTA-Net).

Shapes: ``(N, C, T, J, E)`` -> ``(N, num_classes)``.
"""
from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from graphattn.registry import register_model
from vision.base import IGNORE_INDEX, VisionData, VisionModel
from vision.datasets.skeleton import rearrange_entities

__all__ = ["LateFusionSkeleton"]


@register_model("LateFusionSkeleton", task="vision")
class LateFusionSkeleton(VisionModel):
    """Per-entity temporal ConvNet + concatenation + MLP; see the module docstring."""

    def __init__(self, config: Any, data: VisionData):
        super().__init__(config, data)
        meta = data.meta
        missing = [k for k in ("num_channels", "num_joints", "num_entities") if k not in meta]
        if missing:
            raise ValueError(f"LateFusionSkeleton needs skeleton data: data.meta lacks {missing}")
        c, j, e = int(meta["num_channels"]), int(meta["num_joints"]), int(meta["num_entities"])
        hidden, layers, k = int(config["late_fusion_hidden"]), int(config["late_fusion_layers"]), int(config["late_fusion_kernel"])
        if layers < 1 or k % 2 == 0:
            raise ValueError(f"late_fusion_layers must be >= 1 and late_fusion_kernel odd, got {layers} and {k}")
        self.shape = (c, j, e)
        convs, width = [], c * j
        for _ in range(layers):
            convs += [nn.Conv1d(width, hidden, k, padding=k // 2), nn.BatchNorm1d(hidden), nn.ReLU()]
            width = hidden
        self.encoder = nn.Sequential(*convs)
        self.head = nn.Sequential(nn.Linear(e * hidden, hidden), nn.ReLU(), nn.Dropout(float(config["dropout"])),
                                  nn.Linear(hidden, self.num_classes))
        self.entity_rearrangement = bool(config["entity_rearrangement"])

    def forward(self, x: Tensor) -> Tensor:
        c, j, e = self.shape
        if x.dim() != 5 or (x.shape[1], x.shape[3], x.shape[4]) != (c, j, e):
            raise ValueError(f"LateFusionSkeleton expects x of shape (N, {c}, T, {j}, {e}), got {tuple(x.shape)}")
        n, t = x.shape[0], x.shape[2]
        per_entity = x.permute(0, 4, 1, 3, 2).reshape(n * e, c * j, t)              # (N*E, C*J, T)
        h = self.encoder(per_entity).mean(-1)                                        # (N*E, hidden)
        return self.head(h.reshape(n, -1))                                           # concat in entity order

    def compute_loss(self, batch):
        x, y = batch
        if self.training and self.entity_rearrangement:
            x = rearrange_entities(x)
        out = self(x)
        loss = F.cross_entropy(out, y, label_smoothing=self.label_smoothing, ignore_index=IGNORE_INDEX)
        return loss + self.aux_loss(), out.detach(), y
