r"""OverLoCK with Context-Mixing dynamic kernels (ContMix), "pico" size for CPU.

Lou & Yu, "OverLoCK: An Overview-first-Look-Closely-next ConvNet with Context-Mixing Dynamic Kernels",
CVPR 2025, https://arxiv.org/abs/2502.20087 (official code: github.com/LMMMEng/OverLoCK).

**ContMix.** For pixel i, group g and a window of K x K keys (the neighbourhood-attention window, shifted
inward at borders; :func:`graphattn.ops.neighborhood_indices`):

.. math::
    A_{g,i} = Q_{g,i} K_g^\top \in \mathbb R^{T},\qquad
    w_{g,i} = \mathrm{softmax}_{s \in \text{window}}\big([P A_{g,i}]_s + b_g(\text{offset}(j_s - i))\big),\qquad
    y_{g,i} = \sum_s w_{g,i,s}\, v_{g, j_s}

Q are per-pixel queries, K are T pooled context-region tokens (the Overview-Net's prior), P a shared linear
map from the T affinities to the K^2 (and S^2) kernel logits, b a relative-position bias. The weights depend
on the query's global affinities and the offset, never on the key pixel. As message passing this is a
:class:`~graphattn.attention.GraphAttention` on the neighbourhood graph with a :class:`KernelScore` (the
generated logit of the edge's window slot + bias), the receiver softmax and a :class:`GroupMessage` (raw
values split into groups). ``impl`` picks how the same function is computed: ``"dense"`` (the layer's dense
path with the boolean neighbourhood mask; the reference), ``"sparse"`` (the layer's edge-list path),
``"gather"`` (index gather) and ``"unfold"`` (the official fallback: ``F.unfold`` of valid windows, then
replicate-padding of the window stacks, which equals the shifted border windows).

**Network.** Base-Net (stem + stages 1-3 of RepConvBlocks), Overview-Net (downsample + stage 4 -> context
prior, with an auxiliary classifier, weight ``aux_weight``), Focus-Net (DynamicConvBlocks at the stage-3
resolution with kernel ``kernels[0]``, joint downsample, DynamicConvBlocks with ``kernels[1]``; the context is
updated by every block and re-mixed with the prior from the second block on: ``h <- s_x h + s_h h_prior``).

Deviations (pico scale for 16x16 inputs): dims [16, 32, 48, 64], depth 1 per stage, one DynamicConvBlock per
Focus stage, stage 3 keeps stage 2's resolution (no 1/16 on a 16 px image), T = 4x4 pooled context tokens
(7x7 in the paper), kernels 5 and 3 with small kernel 3 (13/7 and 5), plain depthwise convolutions instead
of the dilated re-parameterised large-kernel blocks, no drop path / EMA.

Options for the ablation: ``mixer="contmix" | "static"`` (a static depthwise conv of the same two kernel
sizes replaces the dynamic kernels) and ``context_keys="prior" | "self"`` (keys pooled from the block's own
features instead of the context prior).

Letters in shape comments: B batch, C channels, G groups, N = H W pixels, K2 window size, T context tokens.
"""
from __future__ import annotations

import functools
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from graphattn.attention import GraphAttention, Message, Score
from graphattn.ops import grid_coordinates, neighborhood_indices, neighborhood_mask
from graphattn.registry import register_model
from vision.base import VisionData, VisionModel

__all__ = ["window_tables", "KernelScore", "GroupMessage", "ContMix", "DynamicConvBlock", "OverLoCKNet",
           "OverLoCK", "IMPLS"]

IMPLS = ("dense", "sparse", "gather", "unfold")


@functools.lru_cache(maxsize=32)
def window_tables(shape: tuple[int, int], k: int) -> dict[str, Tensor]:
    """Neighbourhood tables of a K x K window on an H x W grid (row-major pixels).

    ``index (N, K2)``: key pixel of each window slot (slots in row-major window order); ``rel (N, K2)``: index of
    the key's offset from the query in the ``(2K-1)^2`` bias table; ``slot_dense`` / ``rel_dense (N, N)``: the
    same keyed by key pixel (0 off the window); ``mask (N, N)``: the neighbourhood.
    """
    index, valid = neighborhood_indices(shape, k)
    assert bool(valid.all())
    coords = grid_coordinates(shape)                                              # (N, 2)
    d = coords[index] - coords[:, None, :]                                        # (N, K2, 2) in [-(K-1), K-1]
    rel = (d[..., 0] + k - 1) * (2 * k - 1) + (d[..., 1] + k - 1)
    n = index.shape[0]
    slot_dense = torch.zeros(n, n, dtype=torch.long)
    rel_dense = torch.zeros(n, n, dtype=torch.long)
    rows = torch.arange(n)[:, None].expand_as(index)
    slot_dense[rows, index] = torch.arange(k * k).expand_as(index)
    rel_dense[rows, index] = rel
    return {"index": index, "rel": rel, "slot_dense": slot_dense, "rel_dense": rel_dense,
            "mask": neighborhood_mask(shape, k)}


class KernelScore(Score):
    """Score of edge ``j -> i``: the generated logit of the window slot holding ``j`` plus a relative-position
    bias per group. The receiver's features *are* its ``K^2`` logits per group; the sender contributes only its
    position.

    Args:
        shape: grid (H, W). kernel_size: K (odd). groups: G.

    Shapes:
        project: x_dst (..., N, G * K2) -> q (..., N, G, K2); edge: edge_type = window slot (E,) -> (E, G);
        dense: q (B, G, N, K2) -> (B, G, N, N) (entries off the window are masked by the layer).
    """

    def __init__(self, shape: tuple[int, int], kernel_size: int, groups: int):
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        self.shape, self.k, self.groups = tuple(shape), kernel_size, groups
        self.rpb = nn.Parameter(torch.zeros(groups, (2 * kernel_size - 1) ** 2))   # zero-init, as the paper

    def tables(self, device) -> dict[str, Tensor]:
        return {k: v.to(device) for k, v in window_tables(self.shape, self.k).items()}

    def project(self, x_dst, x_src):
        q = x_dst.unflatten(-1, (self.groups, self.k * self.k))
        return q, x_src.new_zeros(*x_src.shape[:-1], self.groups, 0)

    def edge(self, q, k, edge_index, edge_type=None):
        if edge_type is None:
            raise ValueError("KernelScore needs edge_type = the window slot of each edge")
        n = self.shape[0] * self.shape[1]
        t = self.tables(q.device)
        src, dst = edge_index
        rel = t["rel"][dst % n, edge_type]                                          # (E,)
        return q[dst, :, edge_type] + self.rpb[:, rel].T                            # (E, G)

    def dense(self, q, k):
        t = self.tables(q.device)
        B, G, N, _ = q.shape
        logits = q.gather(-1, t["slot_dense"].expand(B, G, N, N))                  # (B, G, N, N)
        return logits + self.rpb[:, t["rel_dense"]]

    def kernels(self, logits: Tensor) -> Tensor:
        """Softmax-normalised kernels per pixel/group: logits (B, G, N, K2) -> (B, G, N, K2)."""
        t = self.tables(logits.device)
        return torch.softmax(logits + self.rpb[:, t["rel"]], dim=-1)


class GroupMessage(Message):
    """The sender's raw features split into G groups of C / G channels (ContMix has no value projection).

    Shapes: x_src (..., N, C) -> (..., N, G, C / G).
    """

    def __init__(self, channels: int, groups: int):
        super().__init__()
        if channels % groups:
            raise ValueError(f"channels ({channels}) must be divisible by groups ({groups})")
        self.heads, self.value_dim = groups, channels // groups

    def project(self, x_src):
        return x_src.unflatten(-1, (self.heads, self.value_dim))


class _WindowMix(nn.Module):
    """Aggregation of values over K x K windows with given per-pixel logits (one kernel size)."""

    def __init__(self, channels: int, shape: tuple[int, int], kernel_size: int, groups: int):
        super().__init__()
        self.shape, self.k, self.groups = tuple(shape), kernel_size, groups
        self.attn = GraphAttention(groups * kernel_size ** 2, channels, heads=groups, head_dim=kernel_size ** 2,
                                   src_dim=channels, score=KernelScore(shape, kernel_size, groups),
                                   message=GroupMessage(channels, groups), update="none")

    def forward(self, logits: Tensor, v: Tensor, impl: str) -> Tensor:
        """logits (B, G, N, K2), v (B, C, H, W) -> (B, C, H, W)."""
        B, C, H, W = v.shape
        G, K, N = self.groups, self.k, H * W
        score: KernelScore = self.attn.score
        t = score.tables(v.device)
        if impl == "dense":
            x = logits.permute(0, 2, 1, 3).flatten(2)                                 # (B, N, G K2)
            out = self.attn(x, x_src=v.flatten(2).transpose(1, 2), mask=t["mask"])    # (B, N, C)
            return out.transpose(1, 2).reshape(B, C, H, W)
        if impl == "sparse":
            x = logits.permute(0, 2, 1, 3).reshape(B * N, G * K * K)
            offs = (torch.arange(B, device=v.device) * N)[:, None, None]
            dst = (torch.arange(N, device=v.device)[None, :, None] + offs).expand(B, N, K * K)
            src = t["index"][None] + offs
            edge_index = torch.stack([src.reshape(-1), dst.reshape(-1)])
            edge_type = torch.arange(K * K, device=v.device).repeat(B * N)
            out = self.attn(x, edge_index, x_src=v.flatten(2).transpose(1, 2).reshape(B * N, C), edge_type=edge_type)
            return out.view(B, N, C).transpose(1, 2).reshape(B, C, H, W)
        w = score.kernels(logits)                                                     # (B, G, N, K2)
        if impl == "gather":
            vals = v.view(B, G, C // G, N)[..., t["index"]]                          # (B, G, C/G, N, K2)
            return torch.einsum("bgnk,bgcnk->bgcn", w, vals).reshape(B, C, H, W)
        if impl == "unfold":
            p = K // 2
            cols = F.unfold(v, K)                                                     # (B, C K2, (H-K+1)(W-K+1))
            cols = cols.view(B, C * K * K, H - K + 1, W - K + 1)
            cols = F.pad(cols, (p, p, p, p), mode="replicate")                        # border = shifted windows
            vals = cols.view(B, G, C // G, K * K, N)
            return torch.einsum("bgnk,bgckn->bgcn", w, vals).reshape(B, C, H, W)
        raise ValueError(f"impl: expected one of {IMPLS}, got {impl!r}")


class ContMix(nn.Module):
    """Context-Mixing dynamic convolution (see the module docstring).

    Args:
        dim: channels C of the values (split in two halves: small and large kernels).
        key_dim: channels of the features the context keys are pooled from.
        shape: grid (H, W).
        kernel_size: large kernel K (default 5). small_kernel: S (default 3).
        heads: G = 2 * heads groups (default 1).
        context_size: the context is average-pooled to a context_size^2 grid of tokens T (default 4).
        impl: ``"dense" | "sparse" | "gather" | "unfold"`` (default ``"gather"``).

    Shapes: v (B, C, H, W), z_q (B, C, H, W), z_k (B, key_dim, H, W) -> (B, C, H, W); with
    ``return_kernels`` also ``(kernels_small (B, G, N, S2), kernels_large (B, G, N, K2))``.
    """

    def __init__(self, dim: int, key_dim: int, shape: tuple[int, int], kernel_size: int = 5, small_kernel: int = 3,
                 heads: int = 1, context_size: int = 4, impl: str = "gather"):
        super().__init__()
        if impl not in IMPLS:
            raise ValueError(f"impl: expected one of {IMPLS}, got {impl!r}")
        if dim % (4 * heads):
            raise ValueError(f"dim ({dim}) must be divisible by 4 * heads ({4 * heads})")
        if min(shape) < kernel_size:
            raise ValueError(f"grid {shape} is smaller than kernel_size {kernel_size}")
        self.groups, self.impl, self.context_size = 2 * heads, impl, context_size
        self.s2, self.k2 = small_kernel ** 2, kernel_size ** 2
        half = dim // 2
        self.q = nn.Sequential(nn.Conv2d(dim, half, 1), nn.BatchNorm2d(half))
        self.k = nn.Sequential(nn.Conv2d(key_dim, half, 1), nn.BatchNorm2d(half))
        self.scale = (half // self.groups) ** -0.5
        self.gen = nn.Linear(context_size ** 2, self.s2 + self.k2)                 # shared by all groups
        self.small = _WindowMix(half, shape, small_kernel, self.groups)
        self.large = _WindowMix(dim - half, shape, kernel_size, self.groups)

    def logits(self, z_q: Tensor, z_k: Tensor) -> tuple[Tensor, Tensor]:
        B, _, H, W = z_q.shape
        G = self.groups
        q = self.q(z_q).view(B, G, -1, H * W).transpose(-1, -2) * self.scale     # (B, G, N, C/2G)
        ctx = F.adaptive_avg_pool2d(z_k, self.context_size)
        k = self.k(ctx).view(B, G, -1, self.context_size ** 2)                      # (B, G, C/2G, T)
        gen = self.gen(q @ k)                                                       # (B, G, N, S2 + K2)
        return gen[..., :self.s2], gen[..., self.s2:]

    def forward(self, v: Tensor, z_q: Tensor, z_k: Tensor, impl: str | None = None, return_kernels: bool = False):
        impl = impl or self.impl
        ls, lk = self.logits(z_q, z_k)
        half = self.small.attn.message.heads * self.small.attn.message.value_dim
        out = torch.cat([self.small(ls, v[:, :half], impl), self.large(lk, v[:, half:], impl)], 1)
        if return_kernels:
            return out, (self.small.attn.score.kernels(ls), self.large.attn.score.kernels(lk))
        return out


class _LN2d(nn.LayerNorm):
    def forward(self, x):
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class _GRN(nn.Module):
    """Global response normalisation (ConvNeXt-V2)."""

    def __init__(self, dim: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1, dim, 1, 1))
        self.beta = nn.Parameter(torch.zeros(1, dim, 1, 1))

    def forward(self, x):
        g = x.pow(2).sum((2, 3), keepdim=True).sqrt()
        return self.gamma * (x * (g / (g.mean(1, keepdim=True) + 1e-6))) + self.beta + x


class _SE(nn.Module):
    def __init__(self, dim: int, r: int = 4):
        super().__init__()
        self.fc = nn.Sequential(nn.Conv2d(dim, max(dim // r, 4), 1), nn.GELU(), nn.Conv2d(max(dim // r, 4), dim, 1))

    def forward(self, x):
        return x * torch.sigmoid(self.fc(x.mean((2, 3), keepdim=True)))


def _dw(dim: int, k: int) -> nn.Conv2d:
    return nn.Conv2d(dim, dim, k, padding=k // 2, groups=dim)


class _ConvFFN(nn.Module):
    def __init__(self, dim: int, ratio: int = 2):
        super().__init__()
        h = dim * ratio
        self.fc1, self.dw, self.grn, self.fc2 = nn.Conv2d(dim, h, 1), _dw(h, 3), _GRN(h), nn.Conv2d(h, dim, 1)

    def forward(self, x):
        x = F.gelu(self.fc1(x))
        return self.fc2(self.grn(x + self.dw(x)))


class RepConvBlock(nn.Module):
    """Base/Overview-Net block: DW3x3 residual; LN -> large DW conv -> BN -> SE -> ConvFFN; layer scale."""

    def __init__(self, dim: int, kernel_size: int = 5):
        super().__init__()
        self.pos = _dw(dim, 3)
        self.norm = _LN2d(dim)
        self.large = nn.Sequential(_dw(dim, kernel_size), nn.BatchNorm2d(dim), _SE(dim))
        self.ffn = _ConvFFN(dim)
        self.ls = nn.Parameter(torch.full((1, dim, 1, 1), 1.0))

    def forward(self, x):
        x = x + self.pos(x)
        return x + self.ls * self.ffn(self.large(self.norm(x)))


class DynamicConvBlock(nn.Module):
    """Focus-Net block with ContMix (or a static depthwise mixer); returns updated (x, context).

    Args:
        dim: C. ctx_dim: context channels C_h. shape: grid. kernel_size / small_kernel: K / S. heads: G / 2.
        context_size: pooled context grid side. mixer: ``"contmix" | "static"``. context_keys: ``"prior" |
        "self"``. impl: ContMix implementation.

    Shapes: x (B, C, H, W), h (B, C_h, H, W) -> (B, C, H, W), (B, C_h, H, W).
    """

    def __init__(self, dim: int, ctx_dim: int, shape, kernel_size: int = 5, small_kernel: int = 3, heads: int = 1,
                 context_size: int = 4, mixer: str = "contmix", context_keys: str = "prior", impl: str = "gather"):
        super().__init__()
        if mixer not in ("contmix", "static"):
            raise ValueError(f"mixer: expected 'contmix' or 'static', got {mixer!r}")
        if context_keys not in ("prior", "self"):
            raise ValueError(f"context_keys: expected 'prior' or 'self', got {context_keys!r}")
        self.dim, self.mixer, self.context_keys = dim, mixer, context_keys
        total = dim + ctx_dim
        self.fuse = _dw(total, 3)
        self.norm = _LN2d(total)
        self.value = nn.Sequential(_dw(total, 3), nn.BatchNorm2d(total), nn.GELU(), nn.Conv2d(total, dim, 1), _GRN(dim))
        self.gate = nn.Sequential(nn.Conv2d(dim, dim, 1), nn.BatchNorm2d(dim), nn.SiLU())
        self.lepe = nn.Sequential(_dw(dim, kernel_size), nn.BatchNorm2d(dim))
        if mixer == "contmix":
            key_dim = ctx_dim if context_keys == "prior" else dim
            self.mix = ContMix(dim, key_dim, tuple(shape), kernel_size, small_kernel, heads, context_size, impl)
        else:
            half = dim // 2
            self.mix_small, self.mix_large = _dw(half, small_kernel), _dw(dim - half, kernel_size)
        self.proj = nn.Sequential(nn.Conv2d(dim, dim, 1), nn.BatchNorm2d(dim))
        self.se = _SE(dim)
        self.out = nn.Sequential(nn.BatchNorm2d(dim), nn.Conv2d(dim, total, 1))
        self.res_scale = nn.Parameter(torch.ones(1, total, 1, 1))                    # scales the shortcut
        self.pos = _dw(total, 3)
        self.norm2 = _LN2d(total)
        self.ffn = _ConvFFN(total)

    def forward(self, x: Tensor, h: Tensor, return_kernels: bool = False):
        xf = torch.cat([x, h], 1)
        xf = xf + self.fuse(xf)
        z = self.norm(xf)
        v = self.value(z)
        kernels = None
        if self.mixer == "contmix":
            z_k = z[:, self.dim:] if self.context_keys == "prior" else z[:, :self.dim]
            mixed = self.mix(v, z[:, :self.dim], z_k, return_kernels=return_kernels)
            if return_kernels:
                mixed, kernels = mixed
        else:
            half = self.dim // 2
            mixed = torch.cat([self.mix_small(v[:, :half]), self.mix_large(v[:, half:])], 1)
        y = self.se(self.proj(mixed) + self.lepe(v)) * self.gate(v)
        out = self.res_scale * xf + self.out(y)
        out = out + self.pos(out)
        out = out + self.ffn(self.norm2(out))
        x, h = out[:, :self.dim], out[:, self.dim:]
        return (x, h, kernels) if return_kernels else (x, h)


def _down(cin: int, cout: int, stride: int = 2) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.BatchNorm2d(cout))


class OverLoCKNet(nn.Module):
    """OverLoCK-pico: Base-Net, Overview-Net (context prior + aux head) and Focus-Net.

    Args:
        in_channels: image channels (default 1). num_classes: default 10. image_size: side S, divisible by 4
        (default 16). dims: four stage widths (default (16, 32, 48, 64)). kernels: Focus-Net kernel per stage
        (default (5, 3)). small_kernel: default 3. heads: per Focus stage (default (1, 1)). context_size: pooled
        context side (default 4). mixer / context_keys / impl: see :class:`DynamicConvBlock`.

    Shapes: x (B, C, S, S) -> logits (B, num_classes); ``forward_aux`` also returns the aux logits.
    Resolutions: stages 1: S, 2-3: S/2 (Focus stage 1), 4 and Focus stage 2: S/4.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, image_size: int = 16, dims=(16, 32, 48, 64),
                 kernels=(5, 3), small_kernel: int = 3, heads=(1, 1), context_size: int = 4, mixer: str = "contmix",
                 context_keys: str = "prior", impl: str = "gather"):
        super().__init__()
        if image_size % 4:
            raise ValueError(f"image_size must be divisible by 4, got {image_size}")
        c1, c2, c3, c4 = dims
        ch = c4 // 4
        r2, r4 = image_size // 2, image_size // 4
        self.stem = nn.Sequential(nn.Conv2d(in_channels, c1, 3, 1, 1), nn.BatchNorm2d(c1), nn.GELU(),
                                  nn.Conv2d(c1, c1, 3, 1, 1), nn.BatchNorm2d(c1), nn.GELU())
        self.stage1 = RepConvBlock(c1)
        self.down2, self.stage2 = _down(c1, c2), RepConvBlock(c2)
        self.down3, self.stage3 = _down(c2, c3, 1), RepConvBlock(c3)
        self.down4, self.stage4 = _down(c3, c4), RepConvBlock(c4, 3)
        self.aux_head = nn.Sequential(nn.BatchNorm2d(c4), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c4, num_classes))
        self.prior_proj = nn.Conv2d(c4, ch, 1)
        kw = dict(small_kernel=small_kernel, context_size=context_size, mixer=mixer, context_keys=context_keys, impl=impl)
        self.focus1 = DynamicConvBlock(c3, ch, (r2, r2), kernels[0], heads=heads[0], **kw)
        self.joint_down_x, self.joint_down_h = _down(c3, c4), _down(ch, ch)
        self.focus2 = DynamicConvBlock(c4, ch, (r4, r4), kernels[1], heads=heads[1], **kw)
        self.mix_x = nn.Parameter(torch.ones(1, ch, 1, 1))
        self.mix_prior = nn.Parameter(torch.ones(1, ch, 1, 1))
        self.head = nn.Sequential(nn.Conv2d(c4 + ch, 128, 1), nn.BatchNorm2d(128), nn.SiLU(),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, num_classes))

    def forward_all(self, x: Tensor, return_kernels: bool = False):
        x = self.stage1(self.stem(x))
        x = self.stage2(self.down2(x))
        x3 = self.stage3(self.down3(x))                                               # Base-Net output
        prior = self.stage4(self.down4(x3))                                           # Overview-Net
        aux = self.aux_head(prior)
        p = self.prior_proj(prior)                                                    # (B, C_h, S/4, S/4)
        h = F.interpolate(p, size=x3.shape[-2:], mode="bilinear", align_corners=False)
        out1 = self.focus1(x3, h, return_kernels=return_kernels)
        x, h = out1[0], out1[1]
        x, h = self.joint_down_x(x), self.joint_down_h(h)
        h = self.mix_x * h + self.mix_prior * p                                       # re-mix with the prior
        out2 = self.focus2(x, h, return_kernels=return_kernels)
        logits = self.head(torch.cat([out2[0], out2[1]], 1))
        kernels = (out1[2], out2[2]) if return_kernels else None
        return logits, aux, kernels

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_all(x)[0]


@register_model("OverLoCK", task="vision")
class OverLoCK(VisionModel):
    """Registered wrapper of :class:`OverLoCKNet`; the loss adds ``aux_weight`` x the Overview-Net's
    auxiliary cross entropy. Config keys: ``vision/model/OverLoCK.yaml``."""

    def __init__(self, config: Any, data: VisionData) -> None:
        super().__init__(config, data)
        self.net = OverLoCKNet(int(data.meta.get("in_channels", 1)), data.num_classes,
                               int(data.meta.get("image_size", 16)), tuple(config["overlock_dims"]),
                               tuple(config["overlock_kernels"]), int(config["small_kernel"]),
                               tuple(config["overlock_heads"]), int(config["context_size"]), str(config["mixer"]),
                               str(config["context_keys"]), str(config["contmix_impl"]))
        self.aux_weight = float(config["aux_weight"])

    def forward(self, x):
        return self.net(x)

    def compute_loss(self, batch):
        x, y = batch
        logits, aux, _ = self.net.forward_all(x)
        loss = F.cross_entropy(logits, y, label_smoothing=self.label_smoothing)
        return loss + self.aux_weight * F.cross_entropy(aux, y), logits.detach(), y
