r"""Neighborhood Attention Transformer (Hassani, Walton, Li, Li, Shi, CVPR 2023,
https://arxiv.org/abs/2204.07143), with the attention of Generalized Neighborhood Attention: Multi-dimensional
Sparse Attention at the Speed of Light (Hassani et al., 2025, https://arxiv.org/abs/2504.16922).

NA-ViT: the tiny pre-LN ViT of :mod:`vision.tiny_vit` whose attention is
:class:`graphattn.attention.neighborhood.NeighborhoodAttention` on the token grid: every query attends only
to the ``k x k`` window of tokens around it (shifted inward at the borders), per head

.. math::
    y_i = W_o \big\Vert_h \sum_{j \in \mathcal{N}_k(i)}
          \mathrm{softmax}_{j \in \mathcal{N}_k(i)}\!\big(q^h_i \cdot k^h_j / \sqrt{D_h}\big)\, v^h_j

with GNA's stride (queries of one ``s x s`` group share one window) and dilation. With ``kernel_size`` equal
to the tokens per side (8 on the 8x8 digits with patch 1) every window is the whole grid: full attention.
This is the "NA-ViT" of ``experiments/primitives_digits.py --which na`` (ours; the papers give no digits
recipe): patch 1 on 8x8 (64 tokens, 3x3 convolutional tokenizer as in NAT), width 64, 2 blocks, 4 heads,
MLP x2, learned positions, mean pooling; README (3 seeds, 20 epochs): k = 3 0.989, full (k = 8) 0.978.

Args (``vision/model/NAViT.yaml``):
    patch_size (1), embed_dim (64), depth (2), num_heads (4), mlp_ratio (2.0): the tiny ViT;
    kernel_size (3), stride (1), dilation (1): GNA window per axis; need ``1 <= stride <= kernel_size`` and
    ``kernel_size * dilation <= tokens per side``.
    From the dataset: ``meta["in_channels"]``, ``meta["image_size"]`` (divisible by patch_size), num_classes.

Shapes:
    x (B, C_in, S, S) -> logits (B, num_classes); tokens N = (S / patch_size)^2 on a grid of side S / patch_size.
"""

from __future__ import annotations

from typing import Any

from graphattn.attention.neighborhood import NeighborhoodAttention
from graphattn.registry import register_model
from vision.base import VisionData
from vision.tiny_vit import TinyViTClassifier

__all__ = ["NAViT"]


@register_model("NAViT", task="vision")
class NAViT(TinyViTClassifier):
    """Tiny ViT with (generalized) neighbourhood attention; see the module docstring."""

    def __init__(self, config: Any, data: VisionData) -> None:
        super().__init__(config, data)
        self.kernel_size, self.stride = int(config["kernel_size"]), int(config["stride"])
        self.dilation = int(config["dilation"])
        if not 1 <= self.stride <= self.kernel_size or self.dilation < 1:
            raise ValueError(f"NAViT: need 1 <= stride <= kernel_size and dilation >= 1; got kernel_size "
                             f"{self.kernel_size}, stride {self.stride}, dilation {self.dilation}")
        if self.kernel_size * self.dilation > self.grid:
            raise ValueError(f"NAViT: the window (kernel_size {self.kernel_size} x dilation {self.dilation}) does not fit "
                             f"the {self.grid}x{self.grid} token grid of {self.image_size}px images with patch_size "
                             f"{self.patch_size}; use kernel_size <= {self.grid // self.dilation} "
                             f"(kernel_size {self.grid} is full attention) or a larger --image_size")
        shape = (self.grid, self.grid)
        self.build(lambda i: NeighborhoodAttention(self.dim, self.heads, shape, self.kernel_size,
                                                   stride=self.stride, dilation=self.dilation))
