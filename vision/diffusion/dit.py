"""A tiny class-conditional Diffusion Transformer built from the core's dense ``GraphAttention``.

Peebles & Xie, "Scalable Diffusion Models with Transformers" (https://arxiv.org/abs/2212.09748): the image is
cut into ``p x p`` patches (tokens, a complete token graph), each block is self-attention + MLP with
adaLN-Zero conditioning on ``c = emb(t) + emb(y)``:

    (shift1, scale1, gate1, shift2, scale2, gate2) = W_ada SiLU(c)           (W_ada zero-initialised)
    h = h + gate1 * Attn(LN(h) (1 + scale1) + shift1)
    h = h + gate2 * MLP(LN(h) (1 + scale2) + shift2)

and a final adaLN + linear layer (zero-initialised) predicts each patch's noise. Label ``num_classes`` is the
null label for classifier-free guidance. Deviations from the paper: learned (not frozen sin-cos) position
embeddings; no learned variance (the output is eps only, as in DDPM); sizes for 8x8 digits.

Args (config keys, ``vision/diffusion/model/DiT.yaml``): patch_size, hidden_size, num_layers, num_heads,
mlp_ratio; plus the task's timesteps, noise_schedule.

Shapes: x_t (B, C, S, S), t (B,), y (B,) -> eps (B, C, S, S); tokens (B, (S / p)^2, hidden_size).
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from graphattn.attention import GraphAttention
from graphattn.registry import register_model

from .base import DiffusionModel
from .data import DiffusionData

__all__ = ["DiT", "DiTBlock", "timestep_embedding"]


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding of integer steps: ``(B,) -> (B, dim)``."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], -1)
    return F.pad(emb, (0, dim % 2))


def _modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    return x * (1 + scale) + shift


class DiTBlock(nn.Module):
    """One adaLN-Zero transformer block; ``attn`` is a dense-path :class:`GraphAttention` (projection update)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = GraphAttention(dim, heads=heads)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim))
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))
        nn.init.zeros_(self.ada[1].weight)
        nn.init.zeros_(self.ada[1].bias)

    def forward(self, h: Tensor, c: Tensor) -> Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.ada(c)[:, None].chunk(6, -1)   # each (B, 1, D)
        h = h + gate1 * self.attn(_modulate(self.norm1(h), shift1, scale1))
        return h + gate2 * self.mlp(_modulate(self.norm2(h), shift2, scale2))


@register_model("DiT", task="diffusion")
class DiT(DiffusionModel):
    __doc__ = __doc__

    def __init__(self, config: Mapping[str, Any], data: DiffusionData) -> None:
        super().__init__(config, data)
        p, dim = int(config["patch_size"]), int(config["hidden_size"])
        layers, heads = int(config["num_layers"]), int(config["num_heads"])
        if p < 1 or self.image_size % p:
            raise ValueError(f"patch_size: expected a divisor of image_size {self.image_size}, got {p}")
        if dim % heads:
            raise ValueError(f"hidden_size ({dim}) must be divisible by num_heads ({heads})")
        if layers < 1:
            raise ValueError(f"num_layers: expected an int >= 1, got {layers}")
        self.patch, self.dim, self.grid = p, dim, self.image_size // p
        c = self.in_channels
        self.embed = nn.Linear(c * p * p, dim)
        self.pos = nn.Parameter(torch.randn(1, self.grid ** 2, dim) * 0.02)
        self.t_mlp = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.y_emb = nn.Embedding(self.num_classes + 1, dim)
        self.blocks = nn.ModuleList(DiTBlock(dim, heads, float(config["mlp_ratio"])) for _ in range(layers))
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.final_ada = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))
        self.out = nn.Linear(dim, c * p * p)
        for layer in (self.final_ada[1], self.out):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def patchify(self, x: Tensor) -> Tensor:
        b, c, p, g = x.shape[0], self.in_channels, self.patch, self.grid
        x = x.reshape(b, c, g, p, g, p).permute(0, 2, 4, 1, 3, 5)               # (B, g, g, C, p, p)
        return x.reshape(b, g * g, c * p * p)

    def unpatchify(self, tokens: Tensor) -> Tensor:
        b, c, p, g = tokens.shape[0], self.in_channels, self.patch, self.grid
        x = tokens.reshape(b, g, g, c, p, p).permute(0, 3, 1, 4, 2, 5)           # (B, C, g, p, g, p)
        return x.reshape(b, c, g * p, g * p)

    def forward(self, x_t: Tensor, t: Tensor, y: Tensor) -> Tensor:
        expected = (self.in_channels, self.image_size, self.image_size)
        if x_t.dim() != 4 or tuple(x_t.shape[1:]) != expected:
            raise ValueError(f"DiT: expected x_t of shape (B, {', '.join(map(str, expected))}), got {tuple(x_t.shape)}")
        if y.numel() and (int(y.min()) < 0 or int(y.max()) > self.num_classes):
            raise ValueError(f"DiT: labels must lie in [0, {self.num_classes}] ({self.num_classes} = null), "
                             f"got values in [{int(y.min())}, {int(y.max())}]")
        c = self.t_mlp(timestep_embedding(t, self.dim)) + self.y_emb(y)               # (B, D)
        h = self.embed(self.patchify(x_t)) + self.pos                                # (B, N, D)
        for block in self.blocks:
            h = block(h, c)
        shift, scale = self.final_ada(c)[:, None].chunk(2, -1)
        return self.unpatchify(self.out(_modulate(self.norm(h), shift, scale)))
