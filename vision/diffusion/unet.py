"""A tiny class-conditional UNet whose self- and cross-attention are the core's ``GraphAttention``.

The Stable-Diffusion UNet family (Rombach et al., "High-Resolution Image Synthesis with Latent Diffusion
Models", https://arxiv.org/abs/2112.10752), shrunk to digits: ResBlocks with a time embedding, one level per
entry of ``unet_channels`` (each level halves the resolution), a mid ResBlock, a mirrored up path with skip
concatenations, and - at the first (full-resolution) level of the down path - one transformer-style pair:

    h = h + SelfAttn(GN(h))                   complete graph on the S x S pixel tokens (16 x 16 = 256, 4 heads)
    h = h + CrossAttn(GN(h), ctx_y)           queries = pixel tokens, keys / values = ctx_y
    ResBlock:  h = skip(x) + conv2(SiLU(GN(conv1(SiLU(GN(x))) + W_t SiLU(emb(t)))))

``ctx_y`` is the label's ``label_tokens`` learned context tokens (the "prompt" of this UNet; label
``num_classes`` is the null label used by classifier-free guidance). The label enters only through the
cross-attention, as SD's text does; the step enters only through the ResBlocks. Deviations from SD: no
feed-forward (GEGLU) after the attentions, one attention pair instead of one per block, nearest-neighbour
upsampling followed by a conv, sizes for 16x16 digits.

``forward(..., return_features=True)`` also returns the output of every level (down levels, mid, up levels),
the matched block outputs that A-SDM's feature distillation compares (``vision/diffusion/asdm_unet.py``).

Args (config keys, ``vision/diffusion/model/UNet.yaml``): unet_channels, unet_blocks, unet_heads, label_tokens,
context_dim, norm_groups; plus the task's timesteps, noise_schedule.

Shapes: x_t (B, C, S, S), t (B,), y (B,) -> eps (B, C, S, S); attention tokens (B, S^2, unet_channels[0]).
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from graphattn.attention import GraphAttention
from graphattn.registry import register_model

from .base import DiffusionModel
from .data import DiffusionData
from .dit import timestep_embedding

__all__ = ["UNet", "ResBlock", "SelfAttentionBlock", "CrossAttentionBlock"]


class ResBlock(nn.Module):
    """``skip(x) + conv2(SiLU(GN(conv1(SiLU(GN(x))) + W_t SiLU(emb))))``; ``skip`` is a 1x1 conv when widths differ."""

    def __init__(self, cin: int, cout: int, emb_dim: int, groups: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(min(groups, cin), cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb_dim, cout)
        self.norm2 = nn.GroupNorm(min(groups, cout), cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(F.silu(emb))[:, :, None, None]
        return self.skip(x) + self.conv2(F.silu(self.norm2(h)))


def _tokens(x: Tensor) -> Tensor:
    return x.flatten(2).transpose(1, 2)                                          # (B, C, S, S) -> (B, S^2, C)


class SelfAttentionBlock(nn.Module):
    """``h + attn(GN(h))`` over the pixel tokens; ``attn`` maps (B, N, C) -> (B, N, C) (a dense
    :class:`GraphAttention` on the complete token graph; A-SDM's students swap in ``GRIAttention``)."""

    def __init__(self, channels: int, heads: int, groups: int):
        super().__init__()
        self.norm = nn.GroupNorm(min(groups, channels), channels)
        self.attn: nn.Module = GraphAttention(channels, heads=heads)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        return x + self.attn(_tokens(self.norm(x))).transpose(1, 2).reshape(b, c, h, w)


class CrossAttentionBlock(nn.Module):
    """``h + attn(GN(h), ctx)``: pixel-token queries, context-token keys and values (bipartite graph)."""

    def __init__(self, channels: int, context_dim: int, heads: int, groups: int):
        super().__init__()
        self.norm = nn.GroupNorm(min(groups, channels), channels)
        self.attn = GraphAttention(channels, heads=heads, src_dim=context_dim)

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        b, c, h, w = x.shape
        return x + self.attn(_tokens(self.norm(x)), x_src=context).transpose(1, 2).reshape(b, c, h, w)


@register_model("UNet", task="diffusion")
class UNet(DiffusionModel):
    __doc__ = __doc__

    def __init__(self, config: Mapping[str, Any], data: DiffusionData) -> None:
        super().__init__(config, data)
        channels = [int(c) for c in config["unet_channels"]]
        blocks, heads = int(config["unet_blocks"]), int(config["unet_heads"])
        groups, ctx_dim, n_ctx = int(config["norm_groups"]), int(config["context_dim"]), int(config["label_tokens"])
        if not channels or min(channels) < 1:
            raise ValueError("unet_channels: expected a non-empty list of positive ints, "
                             f"got {config['unet_channels']!r}")
        if self.image_size % 2 ** (len(channels) - 1):
            raise ValueError(f"unet_channels: {len(channels)} levels halve the image {len(channels) - 1} times; "
                             f"image_size {self.image_size} is not divisible by {2 ** (len(channels) - 1)}")
        if blocks < 1 or n_ctx < 1 or groups < 1:
            raise ValueError(f"unet_blocks, label_tokens and norm_groups must be >= 1, got {blocks}, {n_ctx}, {groups}")
        if channels[0] % heads:
            raise ValueError(f"unet_channels[0] ({channels[0]}) must be divisible by unet_heads ({heads})")
        self.channels, self.label_tokens, self.context_dim = channels, n_ctx, ctx_dim
        c0, emb = channels[0], 4 * channels[0]
        self.t_mlp = nn.Sequential(nn.Linear(c0, emb), nn.SiLU(), nn.Linear(emb, emb))
        self.context = nn.Embedding(self.num_classes + 1, n_ctx * ctx_dim)      # row num_classes: the null label
        self.conv_in = nn.Conv2d(self.in_channels, c0, 3, padding=1)
        self.down, self.downsample = nn.ModuleList(), nn.ModuleList()
        prev = c0
        for i, c in enumerate(channels):
            self.down.append(nn.ModuleList(ResBlock(prev if j == 0 else c, c, emb, groups) for j in range(blocks)))
            prev = c
            if i < len(channels) - 1:
                self.downsample.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
        self.self_attn = SelfAttentionBlock(c0, heads, groups)
        self.cross_attn = CrossAttentionBlock(c0, ctx_dim, heads, groups)
        self.mid = ResBlock(prev, prev, emb, groups)
        self.up, self.upsample = nn.ModuleList(), nn.ModuleList()
        for i in reversed(range(len(channels))):
            c = channels[i]
            self.up.append(nn.ModuleList(ResBlock(prev + c if j == 0 else c, c, emb, groups) for j in range(blocks)))
            prev = c
            if i > 0:
                self.upsample.append(nn.Conv2d(c, c, 3, padding=1))
        self.norm_out = nn.GroupNorm(min(groups, c0), c0)
        self.conv_out = nn.Conv2d(c0, self.in_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def label_context(self, y: Tensor) -> Tensor:
        """The context tokens of labels ``y``: (B,) -> (B, label_tokens, context_dim)."""
        return self.context(y).view(len(y), self.label_tokens, self.context_dim)

    def forward(self, x_t: Tensor, t: Tensor, y: Tensor, return_features: bool = False):
        expected = (self.in_channels, self.image_size, self.image_size)
        if x_t.dim() != 4 or tuple(x_t.shape[1:]) != expected:
            raise ValueError(f"UNet: expected x_t of shape (B, {', '.join(map(str, expected))}), "
                             f"got {tuple(x_t.shape)}")
        if y.shape != (x_t.shape[0],) or t.shape != (x_t.shape[0],):
            raise ValueError(f"UNet: expected t and y of shape ({x_t.shape[0]},), "
                             f"got {tuple(t.shape)} and {tuple(y.shape)}")
        if y.numel() and (int(y.min()) < 0 or int(y.max()) > self.num_classes):
            raise ValueError(f"UNet: labels must lie in [0, {self.num_classes}] ({self.num_classes} = null), "
                             f"got values in [{int(y.min())}, {int(y.max())}]")
        emb = self.t_mlp(timestep_embedding(t, self.channels[0]))                  # (B, 4 c0)
        ctx = self.label_context(y)                                                # (B, T, context_dim)
        h, skips, feats = self.conv_in(x_t), [], []
        for i, level in enumerate(self.down):
            for block in level:
                h = block(h, emb)
            if i == 0:
                h = self.cross_attn(self.self_attn(h), ctx)
            skips.append(h)
            feats.append(h)
            if i < len(self.downsample):
                h = self.downsample[i](h)
        h = self.mid(h, emb)
        feats.append(h)
        for i, level in enumerate(self.up):
            h = torch.cat([h, skips.pop()], 1)
            for block in level:
                h = block(h, emb)
            feats.append(h)
            if i < len(self.upsample):
                h = self.upsample[i](F.interpolate(h, scale_factor=2.0, mode="nearest"))
        eps = self.conv_out(F.silu(self.norm_out(h)))
        return (eps, feats) if return_features else eps
