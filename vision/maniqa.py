r"""MANIQA: multi-dimension attention network for no-reference image quality assessment.

Yang et al., "MANIQA: Multi-dimension Attention Network for No-Reference Image Quality Assessment", CVPR
Workshops 2022, https://arxiv.org/abs/2204.08958 (official code: github.com/IIGROUP/MANIQA).

Features of several backbone layers (ViT blocks with CLS dropped, or CNN stages) are concatenated on channels,
``F in R^{B x N x C}``, then two stages of ``2 x TAB -> 1x1 conv (C -> C') -> SSTB`` and a dual-branch
patch-weighted score:

* **TAB** (channel attention): channels are the tokens and the spatial map their feature,
  :math:`X \in \mathbb R^{C\times N}`; ``A = softmax_row(X W_q (X W_k)^T / sqrt(N))``,
  ``X <- X + dropout(A X W_v)``. A :class:`~graphattn.attention.GraphAttention` over the complete graph of
  channel nodes (``in_dim = N``, one head, update ``"none"``). ``reshape_quirk=True`` reproduces the official
  ``transpose(1, 2).reshape(B, C, N)`` of the result (maintainers, issue #16), off by default.
* **SSTB**: Swin layers (pre-LN window attention with a relative-position bias, MLP) on the token grid;
  window ``w``, shift ``w/2`` on odd blocks. The windows are the neighbourhood primitive with
  ``stride = kernel = w`` (:func:`graphattn.ops.neighborhood_mask`) and the shifted windows that mask taken
  on the cyclically rolled grid, cut by Swin's region labels (:func:`swin_window_mask`); the attention is a
  :class:`GraphAttention` with a :class:`RelPosDotScore` on that graph. Each residual group is
  ``depth`` Swin blocks + 3x3 conv + ReLU, added back as ``x <- scale * group(x) + x`` (scale 0.8).
* **Score**: per token ``s_t = ReLU(MLP(x_t))``, ``w_t = sigmoid(MLP(x_t))``, ``q = sum_t s_t w_t / sum_t w_t``;
  ``weighted=False`` averages ``s_t`` (ablation).

Deviations (CPU scale):

* Backbone. The paper fine-tunes an ImageNet-pretrained ViT-B/8 and reads blocks 6-9; no checkpoint can be
  downloaded here. The default is a small CNN (:class:`ConvBackbone`: full-resolution stem + 3 stride-2 stages,
  each stage average-pooled to the 8x8 token grid; ``feature_layers`` picks the stages to concatenate), trained
  jointly from scratch. ``backbone="vit"`` keeps the original stand-in, a :class:`vision.vit.SmallViT` (patch 8
  on 64x64 crops -> 8x8 tokens, width 64, 4 blocks; read blocks e.g. (1, 2, 3)), which underfits the synthetic
  quality task from scratch (train SRCC about 0.4; ``docs/results/vision.md``): a linear 8x8 patch embedding
  followed by attention has to learn local energy statistics (blur, noise) from 672 crops, which the conv stack
  with pooling gives almost for free.
* Channel widths ``dims`` (default (64, 32)) instead of (768, 384); shifted windows are masked with ``-inf``
  (the official ``-100`` gives the same softmax to float precision); no drop path.

Letters in shape comments: B batch, N tokens (h w), C channels, H heads.
"""
from __future__ import annotations

import functools
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from graphattn.attention import DotProductScore, GraphAttention
from graphattn.ops import grid_coordinates, neighborhood_mask
from graphattn.registry import register_model
from vision.base import VisionData, VisionModel
from vision.vit import SmallViT

__all__ = ["swin_window_mask", "relative_position_index", "RelPosDotScore", "TAB", "SwinBlock", "SSTB",
           "PatchWeightedScore", "ConvBackbone", "MANIQANet", "MANIQA"]


@functools.lru_cache(maxsize=32)
def swin_window_mask(shape: tuple[int, int], window: int, shift: int = 0) -> Tensor:
    """Boolean ``(N, N)`` mask of (shifted) Swin window attention in the *original* token order.

    Unshifted: GNA with ``kernel = stride = window``. Shifted: Swin rolls the grid by ``-shift``, partitions it
    into windows and forbids pairs from different regions of the rolled grid (Swin's ``img_mask`` slices
    ``[0, -w), [-w, -s), [-s, end)`` per axis), which leaves exactly the pairs that share a window without
    wrapping around the border.
    """
    H, W = shape
    if H % window or W % window:
        raise ValueError(f"grid {shape} must be a multiple of the window {window}")
    base = neighborhood_mask(shape, window, stride=window)
    if shift == 0:
        return base
    if not 0 < shift < window:
        raise ValueError(f"shift must be in (0, window), got {shift}")
    coords = grid_coordinates(shape)
    ry, rx = (coords[:, 0] - shift) % H, (coords[:, 1] - shift) % W                 # rolled position of each token
    rolled = ry * W + rx

    def label(r, n):
        return (r >= n - window).long() + (r >= n - shift).long()

    region = label(ry, H) * 3 + label(rx, W)
    return base[rolled][:, rolled] & (region[:, None] == region[None, :])


@functools.lru_cache(maxsize=32)
def relative_position_index(shape: tuple[int, int], window: int) -> Tensor:
    """``(N, N)`` index into a ``(2w-1)^2`` bias table of the offset between two tokens (clamped; only pairs
    inside one window are ever used)."""
    c = grid_coordinates(shape)
    d = (c[:, None, :] - c[None, :, :]).clamp(-(window - 1), window - 1) + window - 1
    return d[..., 0] * (2 * window - 1) + d[..., 1]


class RelPosDotScore(DotProductScore):
    """Scaled dot product plus a learned relative-position bias per head, ``q.k / sqrt(d) + b_h(i - j)``.

    Args: as :class:`DotProductScore`, plus ``shape`` (token grid) and ``window`` (bias table ``(2w-1)^2``).
    """

    sdpa = False

    def __init__(self, dim: int, heads: int, head_dim: int, shape: tuple[int, int], window: int):
        super().__init__(dim, dim, heads, head_dim)
        self.shape, self.window = tuple(shape), window
        self.bias = nn.Parameter(torch.zeros(heads, (2 * window - 1) ** 2))
        nn.init.trunc_normal_(self.bias, std=0.02)

    def _index(self, device) -> Tensor:
        return relative_position_index(self.shape, self.window).to(device)

    def edge(self, q, k, edge_index, edge_type=None):
        n = self.shape[0] * self.shape[1]
        rel = self._index(q.device)[edge_index[1] % n, edge_index[0] % n]
        return super().edge(q, k, edge_index) + self.bias[:, rel].T

    def dense(self, q, k):
        return super().dense(q, k) + self.bias[:, self._index(q.device)]


class TAB(nn.Module):
    """Transposed attention block: attention among channels, each channel's spatial map its feature.

    Args: tokens N (spatial length), dropout (default 0.1), reshape_quirk (default False).
    Shapes: x (B, C, N) -> (B, C, N).
    """

    def __init__(self, tokens: int, dropout: float = 0.1, reshape_quirk: bool = False):
        super().__init__()
        self.attn = GraphAttention(tokens, tokens, heads=1, update="none")            # scale N^-1/2
        self.drop = nn.Dropout(dropout)
        self.reshape_quirk = reshape_quirk

    def forward(self, x: Tensor) -> Tensor:
        out = self.attn(x)                                                            # (B, C, N)
        if self.reshape_quirk:
            out = out.transpose(1, 2).reshape(x.shape)
        return x + self.drop(out)


class SwinBlock(nn.Module):
    """Pre-LN Swin block on a token grid: (shifted) window attention with relative bias, then MLP.

    Shapes: x (B, N, C) -> (B, N, C).
    """

    def __init__(self, dim: int, heads: int, shape: tuple[int, int], window: int, shift: int, mlp_hidden: int,
                 dropout: float = 0.0):
        super().__init__()
        self.shape, self.window, self.shift = tuple(shape), window, shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = GraphAttention(dim, dim, heads, score=RelPosDotScore(dim, heads, dim // heads, shape, window),
                                   update="project", dropout=dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(mlp_hidden, dim))

    def mask(self, device) -> Tensor:
        return swin_window_mask(self.shape, self.window, self.shift).to(device)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x), mask=self.mask(x.device))
        return x + self.mlp(self.norm2(x))


class SSTB(nn.Module):
    """Scale Swin Transformer Block: ``len(depths)`` residual groups ``x <- scale * (conv(blocks(x))) + x``.

    Args: dim, heads, shape (token grid), window (default 4), depths (default (2, 2)), mlp_hidden (default
    2 * dim), scale (default 0.8), dropout.
    Shapes: x (B, N, C) -> (B, N, C).
    """

    def __init__(self, dim: int, heads: int, shape: tuple[int, int], window: int = 4, depths=(2, 2),
                 mlp_hidden: int | None = None, scale: float = 0.8, dropout: float = 0.0):
        super().__init__()
        self.shape, self.scale = tuple(shape), scale
        hidden = mlp_hidden or 2 * dim
        self.groups = nn.ModuleList(
            nn.ModuleList(SwinBlock(dim, heads, shape, window, (window // 2) if i % 2 else 0, hidden, dropout)
                          for i in range(d)) for d in depths)
        self.convs = nn.ModuleList(nn.Conv2d(dim, dim, 3, padding=1) for _ in depths)

    def forward(self, x: Tensor) -> Tensor:
        B, N, C = x.shape
        h, w = self.shape
        for blocks, conv in zip(self.groups, self.convs):
            y = x
            for block in blocks:
                y = block(y)
            y = F.relu(conv(y.transpose(1, 2).reshape(B, C, h, w))).flatten(2).transpose(1, 2)
            x = self.scale * y + x
        return x


class PatchWeightedScore(nn.Module):
    """Dual-branch head: ``sum_t s_t w_t / sum_t w_t`` (or ``mean_t s_t`` with ``weighted=False``).

    ``s_t = ReLU(.)`` (as in the paper) can die: once the score branch is negative on every token of every
    image the prediction is exactly 0 and no gradient reaches the model again. This is how the from-scratch ViT
    backbone collapses at learning rate 2e-3 (``docs/results/vision.md``); starting the branch's bias at 0.8 did
    not prevent it, so no such option is kept.

    Args: dim, dropout (default 0.1), weighted (default True).
    Shapes: x (B, N, C) -> score (B,); ``weights`` returns (B, N).
    """

    def __init__(self, dim: int, dropout: float = 0.1, weighted: bool = True):
        super().__init__()
        self.weighted = weighted

        def mlp():
            return nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(dim, 1))

        self.score = mlp()
        self.weight = mlp() if weighted else None

    def weights(self, x: Tensor) -> Tensor:
        if self.weight is None:
            return torch.ones(x.shape[:2], device=x.device, dtype=x.dtype)
        return torch.sigmoid(self.weight(x)).squeeze(-1)

    def forward(self, x: Tensor) -> Tensor:
        s = F.relu(self.score(x)).squeeze(-1)                                          # (B, N)
        w = self.weights(x)
        return (s * w).sum(1) / w.sum(1)


class ConvBackbone(nn.Module):
    """Small CNN feature extractor whose every stage is pooled to the token grid (a stand-in for the
    pretrained ViT-B/8; see the module docstring).

    A full-resolution 3x3 stem (``stem`` channels) + ReLU, then one stage per entry of ``widths``: 3x3 conv with
    stride 2 + BatchNorm + ReLU + 3x3 conv + BatchNorm + ReLU. ``forward_layers`` returns each stage's map
    average-pooled to ``grid x grid`` and flattened to tokens; concatenating several of them mixes fine-scale
    (pooled energy of high-frequency responses) and coarser features, like MANIQA's 4 ViT blocks.

    Args: in_channels (default 3), widths (default (32, 48, 64): 64 -> 32 -> 16 -> 8 px), grid (token side,
    default 8), stem (default 16).
    Shapes: x (B, C, S, S) -> list of (B, grid * grid, widths[i]).
    """

    def __init__(self, in_channels: int = 3, widths=(32, 48, 64), grid: int = 8, stem: int = 16):
        super().__init__()
        self.grid, self.widths = grid, tuple(widths)
        self.stem = nn.Sequential(nn.Conv2d(in_channels, stem, 3, padding=1), nn.ReLU())
        chans = [stem, *widths]
        self.stages = nn.ModuleList(
            nn.Sequential(nn.Conv2d(chans[i], chans[i + 1], 3, stride=2, padding=1),
                          nn.BatchNorm2d(chans[i + 1]), nn.ReLU(),
                          nn.Conv2d(chans[i + 1], chans[i + 1], 3, padding=1), nn.BatchNorm2d(chans[i + 1]), nn.ReLU())
            for i in range(len(widths)))

    def forward_layers(self, x: Tensor) -> list[Tensor]:
        h = self.stem(x)
        outs = []
        for stage in self.stages:
            h = stage(h)
            outs.append(F.adaptive_avg_pool2d(h, self.grid).flatten(2).transpose(1, 2))     # (B, N, C_i)
        return outs


class MANIQANet(nn.Module):
    """Backbone features -> 2 stages of (TAB x 2, 1x1 conv, SSTB) -> patch-weighted score.

    Args:
        image_size: input side (default 64). patch_size: token side in pixels, grid = image_size / patch_size
        (default 8). in_channels: default 3. backbone: ``"cnn"`` (:class:`ConvBackbone`, default) or ``"vit"``
        (:class:`SmallViT`). cnn_widths: CNN stage widths (default (32, 48, 64)). vit_dim / vit_depth /
        vit_heads: ViT backbone (default 64 / 4 / 4). feature_layers: 0-based CNN stages or ViT blocks whose
        outputs are concatenated (default (0, 1, 2); use e.g. (1, 2, 3) with the ViT). dims: channels after
        each stage's 1x1 conv (default (64, 32)). heads: SSTB heads (default 4). window: default 4. depths:
        default (2, 2). use_tab / use_sstb / weighted / reshape_quirk: ablation switches (default True / True /
        True / False). dropout: default 0.1.

    Shapes: x (B, C, S, S) -> scores (B,); ``forward_weights`` also returns patch weights (B, N).
    """

    def __init__(self, image_size: int = 64, patch_size: int = 8, in_channels: int = 3, vit_dim: int = 64,
                 vit_depth: int = 4, vit_heads: int = 4, feature_layers=(0, 1, 2), dims=(64, 32), heads: int = 4,
                 window: int = 4, depths=(2, 2), use_tab: bool = True, use_sstb: bool = True, weighted: bool = True,
                 reshape_quirk: bool = False, dropout: float = 0.1, backbone: str = "cnn",
                 cnn_widths=(32, 48, 64)):
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image_size ({image_size}) must be divisible by patch_size ({patch_size})")
        self.backbone_kind = backbone
        if backbone == "vit":
            self.backbone = SmallViT(image_size, patch_size, in_channels, vit_dim, vit_depth, vit_heads, num_classes=0)
            widths = [vit_dim] * vit_depth
        elif backbone == "cnn":
            self.backbone = ConvBackbone(in_channels, cnn_widths, image_size // patch_size)
            widths = list(cnn_widths)
        else:
            raise ValueError(f"backbone: expected 'vit' or 'cnn', got {backbone!r}")
        if not feature_layers or any(not 0 <= i < len(widths) for i in feature_layers):
            raise ValueError(f"feature_layers {tuple(feature_layers)} must index the {len(widths)} backbone "
                             f"{'blocks' if backbone == 'vit' else 'stages'}")
        self.feature_layers = tuple(feature_layers)
        # blocks/stages after the last read one (and the ViT's final norm) would never get a gradient: drop them
        if backbone == "vit":
            self.backbone.blocks = self.backbone.blocks[:max(self.feature_layers) + 1]
            self.backbone.norm = nn.Identity()
        else:
            self.backbone.stages = self.backbone.stages[:max(self.feature_layers) + 1]
        grid = image_size // patch_size
        self.shape, n = (grid, grid), grid * grid
        chans = [sum(widths[i] for i in self.feature_layers), *dims]
        self.use_tab, self.use_sstb = use_tab, use_sstb
        self.tabs = nn.ModuleList(nn.Sequential(TAB(n, dropout, reshape_quirk), TAB(n, dropout, reshape_quirk))
                                  for _ in dims) if use_tab else None
        self.convs = nn.ModuleList(nn.Conv2d(chans[i], chans[i + 1], 1) for i in range(len(dims)))
        self.sstbs = nn.ModuleList(SSTB(d, heads, self.shape, window, depths) for d in dims) if use_sstb else None
        self.head = PatchWeightedScore(dims[-1], dropout, weighted)

    def tokens(self, x: Tensor) -> Tensor:
        layers = self.backbone.forward_layers(x)
        drop = 1 if self.backbone_kind == "vit" else 0                                # the ViT's CLS token
        feats = torch.cat([layers[i][:, drop:] for i in self.feature_layers], -1)    # (B, N, C)
        B, N, C = feats.shape
        h, w = self.shape
        for i, conv in enumerate(self.convs):
            if self.use_tab:
                feats = self.tabs[i](feats.transpose(1, 2)).transpose(1, 2)           # channels as tokens
            feats = conv(feats.transpose(1, 2).reshape(B, -1, h, w)).flatten(2).transpose(1, 2)
            if self.use_sstb:
                feats = self.sstbs[i](feats)
        return feats

    def forward_weights(self, x: Tensor) -> tuple[Tensor, Tensor]:
        t = self.tokens(x)
        return self.head(t), self.head.weights(t)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.tokens(x))


@register_model("MANIQA", task="vision")
class MANIQA(VisionModel):
    """Registered wrapper of :class:`MANIQANet` (regression, MSE on the quality score).
    Config keys: ``vision/model/MANIQA.yaml``."""

    def __init__(self, config: Any, data: VisionData) -> None:
        super().__init__(config, data)
        if data.task_type != "regression":
            raise ValueError(f"MANIQA regresses a quality score; dataset task_type is {data.task_type!r}")
        self.net = MANIQANet(int(data.meta.get("image_size", 64)), int(config["patch_size"]),
                             int(data.meta.get("in_channels", 3)), int(config["vit_dim"]), int(config["vit_depth"]),
                             int(config["vit_heads"]), tuple(config["feature_layers"]), tuple(config["maniqa_dims"]),
                             int(config["sstb_heads"]), int(config["window_size"]), tuple(config["sstb_depths"]),
                             bool(config["use_tab"]), bool(config["use_sstb"]), bool(config["weighted_score"]),
                             bool(config["reshape_quirk"]), float(config["maniqa_dropout"]), str(config["backbone"]),
                             tuple(config["cnn_widths"]))

    def forward(self, x):
        return self.net(x)
