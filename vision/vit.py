r"""A small Vision Transformer built from :class:`graphattn.attention.GraphAttention`'s dense path.

Dosovitskiy et al., "An Image is Worth 16x16 Words: Transformers for Image Recognition at Scale", ICLR 2021,
https://arxiv.org/abs/2010.11929. Pre-LN blocks:

.. math::
    x \leftarrow x + \mathrm{Attn}(\mathrm{LN}(x)),\qquad x \leftarrow x + \mathrm{MLP}(\mathrm{LN}(x))

where ``Attn`` is one :class:`GraphAttention` (dot score, receiver softmax, value message, projection update)
on the complete token graph. It is the shared backbone of the vision models that need a ViT: TCPA inserts
prompt tokens as extra *keys* of each block (``extra_keys``) with a per-query mask, MANIQA reads several
blocks' outputs (``forward_layers``).

Letters in shape comments: B batch, T patch tokens, N = 1 + T tokens with CLS, P prompts, D width.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from graphattn.attention import GraphAttention

__all__ = ["ViTBlock", "SmallViT"]


class ViTBlock(nn.Module):
    """Pre-LN transformer block; the attention is a :class:`GraphAttention` on the dense path.

    Args:
        dim: token width D.
        heads: attention heads (``dim`` must be divisible by it).
        mlp_ratio: MLP hidden width / D (default 2).
        dropout: dropout on attention weights and MLP output (default 0).

    Shapes:
        x (B, N, D), extra_keys (B, P, D) inserted after the first token as keys/values only,
        mask (N, 1 + P + N - 1) | (B, ...) | (B, 1|H, ...) boolean -> (B, N, D)
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 2.0, dropout: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = GraphAttention(dim, dim, heads, update="project", dropout=dropout)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim), nn.Dropout(dropout))

    def forward(self, x: Tensor, extra_keys: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
        h = self.norm1(x)
        src = None
        if extra_keys is not None:
            # deep prompting: prompts go through the block's LN and k/v projections but are never queries
            # and never enter the residual stream (TCPA / VPT-deep)
            src = torch.cat([h[:, :1], self.norm1(extra_keys), h[:, 1:]], dim=1)   # (B, 1 + P + T, D)
        x = x + self.attn(h, x_src=src, mask=mask)
        return x + self.mlp(self.norm2(x))


class SmallViT(nn.Module):
    """ViT with a CLS token, learned position embeddings and a linear head.

    Args:
        image_size: side of the square input (default 8, the digits).
        patch_size: side of a patch (default 2 -> 16 tokens on 8x8).
        in_channels: image channels (default 1).
        dim: width D (default 64).
        depth: number of blocks (default 4).
        heads: attention heads (default 4).
        mlp_ratio: MLP hidden width / D (default 2).
        num_classes: outputs of the head; 0 gives no head (default 10).
        dropout: dropout inside the blocks (default 0).

    Shapes:
        x (B, C, S, S) -> logits (B, num_classes); ``forward_layers`` -> list of (B, N, D), one per block.
    """

    def __init__(self, image_size: int = 8, patch_size: int = 2, in_channels: int = 1, dim: int = 64,
                 depth: int = 4, heads: int = 4, mlp_ratio: float = 2.0, num_classes: int = 10,
                 dropout: float = 0.0):
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image_size ({image_size}) must be divisible by patch_size ({patch_size})")
        self.image_size, self.patch_size, self.dim, self.depth = image_size, patch_size, dim, depth
        self.grid = image_size // patch_size
        self.num_patches = self.grid ** 2
        self.patch_embed = nn.Conv2d(in_channels, dim, patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.num_patches, dim))
        self.blocks = nn.ModuleList(ViTBlock(dim, heads, mlp_ratio, dropout) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes) if num_classes > 0 else nn.Identity()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)

    def embed(self, x: Tensor) -> Tensor:
        """Patch + position embedding with the CLS token first: (B, C, S, S) -> (B, N, D)."""
        if x.dim() != 4 or x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            raise ValueError(f"expected images (B, C, {self.image_size}, {self.image_size}), got {tuple(x.shape)}")
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2)                  # (B, T, D)
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        return torch.cat([cls, tokens], dim=1) + self.pos_embed

    def forward_layers(self, x: Tensor) -> list[Tensor]:
        """Output of every block (CLS included)."""
        h = self.embed(x)
        outs = []
        for block in self.blocks:
            h = block(h)
            outs.append(h)
        return outs

    def features(self, x: Tensor) -> Tensor:
        """Normalised CLS feature (B, D)."""
        return self.norm(self.forward_layers(x)[-1][:, 0])

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))
