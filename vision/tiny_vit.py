r"""The tiny pre-LN patch ViT shared by the digit models :class:`vision.na_vit.NAViT` and
:class:`vision.moh_vit.MoHViT` (not a registered model itself).

Dosovitskiy et al., "An Image is Worth 16x16 Words: Transformers for Image Recognition at Scale", ICLR 2021,
https://arxiv.org/abs/2010.11929, at digits scale and without a CLS token:

.. math::
    X_0 = \mathrm{Tok}(x) + P, \qquad
    X \leftarrow X + \mathrm{Attn}_l(\mathrm{LN}(X)), \qquad
    X \leftarrow X + \mathrm{MLP}(\mathrm{LN}(X)), \qquad
    \mathrm{logits} = W\, \mathrm{mean}_i\, \mathrm{LN}(X)_i

``Tok`` is a 3x3 convolution (padding 1, one token per pixel, as NAT's convolutional tokenizer) for
``patch_size`` 1 and a ``p x p`` / stride-``p`` convolution otherwise; ``P`` learned positions (init
``N(0, 0.02^2)``); the MLP is Linear-GELU-Linear. Only the attention of block ``l`` differs between the
models (``make_attention(l)``); an attention module may return ``(out, extra)`` (MoH's routing), and the
extras of all blocks are returned next to the logits. Layer construction order and initialisation are those
of ``TinyViT`` in ``experiments/primitives_digits.py``, so the same seed gives the same initial weights.

Shapes:
    x (B, C_in, S, S) -> logits (B, num_classes), extras (list, one per block whose attention returned one);
    tokens N = S^2 (patch 1) or (S / p)^2.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor, nn

from vision.base import VisionData, VisionModel

__all__ = ["PreLNBlock", "TinyViT", "TinyViTClassifier"]


class PreLNBlock(nn.Module):
    """``x + attn(LN(x))`` then ``x + MLP(LN(x))``; ``forward`` -> ``(x, extra)`` (``extra`` is ``None``
    unless the attention returned a tuple ``(out, extra)``).

    Shapes: x (B, N, D) -> (B, N, D).
    """

    def __init__(self, dim: int, attn: nn.Module, mlp_ratio: float = 2.0):
        super().__init__()
        hidden = int(round(dim * mlp_ratio))
        self.norm1, self.norm2, self.attn = nn.LayerNorm(dim), nn.LayerNorm(dim), attn
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: Tensor) -> tuple[Tensor, Any]:
        a = self.attn(self.norm1(x))
        extra = None
        if isinstance(a, tuple):
            a, extra = a
        x = x + a
        return x + self.mlp(self.norm2(x)), extra


class TinyViT(nn.Module):
    """Tokenizer -> ``depth`` :class:`PreLNBlock` -> LayerNorm -> mean pool -> linear head (module docstring).

    Args:
        in_channels, image_size: the square input images.
        patch_size: 1 (3x3 convolutional tokenizer, one token per pixel) or p > 1 (p x p patches).
        dim: token width D.
        depth: number of blocks.
        make_attention: ``make_attention(l)`` builds block ``l``'s attention ``(B, N, D) -> (B, N, D)``.
        num_classes: outputs of the head.
        mlp_ratio: MLP hidden width / D.
    """

    def __init__(self, in_channels: int, image_size: int, patch_size: int, dim: int, depth: int,
                 make_attention: Callable[[int], nn.Module], num_classes: int, mlp_ratio: float = 2.0):
        super().__init__()
        if patch_size == 1:
            self.embed = nn.Conv2d(in_channels, dim, 3, padding=1)
        else:
            self.embed = nn.Conv2d(in_channels, dim, patch_size, stride=patch_size)
        self.grid = image_size // patch_size
        self.pos = nn.Parameter(torch.randn(1, self.grid**2, dim) * 0.02)
        self.blocks = nn.ModuleList([PreLNBlock(dim, make_attention(i), mlp_ratio) for i in range(depth)])
        self.norm, self.head = nn.LayerNorm(dim), nn.Linear(dim, num_classes)

    def forward(self, x: Tensor) -> tuple[Tensor, list]:
        x = self.embed(x).flatten(2).transpose(1, 2) + self.pos              # (B, N, D)
        extras = []
        for block in self.blocks:
            x, extra = block(x)
            if extra is not None:
                extras.append(extra)
        return self.head(self.norm(x).mean(1)), extras


class TinyViTClassifier(VisionModel):
    """Base of the registered tiny-ViT digit models: reads the shared keys and the image geometry, checks
    them, and lets the subclass build the network with :meth:`build` once its own keys are read.

    Shared keys: patch_size, embed_dim, depth, num_heads, mlp_ratio. From ``data``: ``meta["in_channels"]``,
    ``meta["image_size"]``, ``num_classes`` (classification only).

    After ``__init__``: ``self.dim``, ``self.heads``, ``self.depth``, ``self.grid`` (tokens per side),
    ``self.image_size``, ``self.in_channels``.
    """

    def __init__(self, config: Any, data: VisionData) -> None:
        super().__init__(config, data)
        name = type(self).__name__
        if data.task_type != "classification":
            raise ValueError(f"{name} is an image classifier; the dataset's task_type is {data.task_type!r}")
        for key in ("in_channels", "image_size"):
            if key not in data.meta:
                raise ValueError(f"{name} needs meta['{key}'] from the dataset loader")
        self.in_channels, self.image_size = int(data.meta["in_channels"]), int(data.meta["image_size"])
        self.patch_size = int(config["patch_size"])
        self.dim, self.depth, self.heads = int(config["embed_dim"]), int(config["depth"]), int(config["num_heads"])
        self.mlp_ratio = float(config["mlp_ratio"])
        if self.patch_size < 1:
            raise ValueError(f"patch_size: expected an int >= 1, got {self.patch_size}")
        if self.image_size % self.patch_size:
            raise ValueError(f"{name}: image_size ({self.image_size}) must be divisible by patch_size ({self.patch_size})")
        if self.depth < 1 or self.heads < 1 or self.dim % self.heads:
            raise ValueError(f"{name}: need depth >= 1 and embed_dim ({self.dim}) divisible by num_heads ({self.heads})")
        if self.mlp_ratio <= 0:
            raise ValueError(f"mlp_ratio: expected a float > 0, got {self.mlp_ratio}")
        self.grid = self.image_size // self.patch_size

    def build(self, make_attention: Callable[[int], nn.Module]) -> None:
        """Create ``self.vit``, the :class:`TinyViT` with block ``l``'s attention ``make_attention(l)``."""
        self.vit = TinyViT(self.in_channels, self.image_size, self.patch_size, self.dim, self.depth,
                           make_attention, self.num_classes, self.mlp_ratio)

    def forward_features(self, x: Tensor) -> dict[str, Any]:
        """``{"logits": (B, num_classes), "extras": [per-block attention extras]}``."""
        logits, extras = self.vit(x)
        return {"logits": logits, "extras": extras}

    def forward(self, x: Tensor) -> Tensor:
        return self.vit(x)[0]
