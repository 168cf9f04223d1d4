r"""CARE Transformer: Mobile-Friendly Linear Visual Transformer via Decoupled Dual Interaction.

Zhou, Xu, Cui, Zhou, Zhang, Hong, Zhang, CVPR 2025, https://arxiv.org/abs/2411.16170 (official code:
github.com/zhouyuan888888/CARETrans, ``models/CARETrans.py``; summary in ``shared/papers/care.md``).

A CARE block splits its ``D`` channels into ``[memory m | global | local 3x3 | local 7x7]``. The global slice
goes through linear attention (:class:`graphattn.attention.linear.LinearAttention`: ELU+1 kernel,
``v = X_g``, no value/output projection) in attention stages, or a strip depth-wise pair (11x1 + 1x11) in
the early stages; the local slices through depth-wise convolutions. Dual interaction:

.. math::
    F = \mathrm{Inter}_1([G, L_3, L_7]),\qquad Z = \mathrm{Inter}_2([M, F]),\qquad X' = X + \gamma \odot Z

with ``Inter(x) = x + W_2\,\mathrm{DW}_{3\times3}(\mathrm{GELU}(W_1\,\mathrm{BN}(x)))`` (hidden width ratio
r1 / r2), and the first ``m`` channels of ``X'`` are the next block's memory (the dynamic memory unit).
The last block of the network drops ``Inter_2``'s second projection and both residuals and emits
``r2 * D`` channels to the head (GAP -> GELU -> LayerNorm -> Linear; two heads, averaged, as in the
DeiT-style distillation of the paper; no distillation here).

Options beyond the paper (ablations of ``shared/papers/care.md``, reconstructions marked (R)):
``split="symmetric"`` (R) gives the global branch as many channels as the two local branches together
(global 3m/2, local 3m/4 + 3m/4) instead of CARE's asymmetric ``m : 2m``; ``memory=False`` zeroes the memory
slice in every block; ``interaction2=False`` skips the second interaction (the block adds ``[M, F]``).

Args (``CARENet``):
    num_classes: outputs of the head.
    depths, feat_dims, mem_dims: per stage; the stage width is ``feat + mem`` and ``feat = 3 * mem``.
    ratios: per stage ``(r1, r2)`` hidden ratios of the two interactions.
    heads: per stage number of linear-attention heads, or None for the strip-conv global branch.
    cls_dim: channels emitted by the last block (``r2 * D`` of stage 4 in the paper; None = last width).
    in_chans, stem_stride: image channels and stem patch size (4 in the paper).
    layer_scale_init: gamma's initial value (1e-6 in the paper).
    split, memory, interaction2: ablation switches (see above).

Shapes: x (B, in_chans, H, W) -> logits (B, num_classes).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from graphattn.attention.linear import LinearAttention

__all__ = ["CARETokenMixer", "CAREInteraction", "CAREBlock", "CARENet", "care_s0", "care_nano", "count_macs"]


def _split_sizes(dim: int, mem: int, split: str) -> tuple[int, int, int, int]:
    feat = dim - mem
    if split == "asymmetric":
        return mem, feat // 3, feat // 3, feat - 2 * (feat // 3)
    if split == "symmetric":
        g = feat // 2
        return mem, g, (feat - g) // 2, feat - g - (feat - g) // 2
    raise ValueError(f"split must be 'asymmetric' or 'symmetric', got {split!r}")


class CARETokenMixer(nn.Module):
    """Decoupled token mixer: returns ``(memory, features)`` with features = [global, local3, local7]."""

    def __init__(self, dim: int, mem: int, heads: int | None, split: str = "asymmetric"):
        super().__init__()
        self.sizes = _split_sizes(dim, mem, split)
        _, g, l3, l7 = self.sizes
        if heads:
            self.global_mixer = LinearAttention(g, heads, value="identity", out_proj=False)
            self.strip = None
        else:
            self.global_mixer = None
            self.strip = nn.ModuleList([nn.Conv2d(g, g, (11, 1), padding=(5, 0), groups=g),
                                        nn.Conv2d(g, g, (1, 11), padding=(0, 5), groups=g)])
        self.local3 = nn.Conv2d(l3, l3, 3, padding=1, groups=l3)
        self.local7 = nn.Conv2d(l7, l7, 7, padding=3, groups=l7)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mem, g, l3, l7 = torch.split(x, self.sizes, dim=1)
        b, c, h, w = g.shape
        if self.global_mixer is not None:
            tokens = g.flatten(2).transpose(1, 2)                                   # (B, HW, g)
            g = self.global_mixer(tokens).transpose(1, 2).reshape(b, c, h, w)
        else:
            g = self.strip[0](g) + self.strip[1](g)
        return mem, torch.cat([g, self.local3(l3), self.local7(l7)], dim=1)


class CAREInteraction(nn.Module):
    """``x + W_2 DW3x3(GELU(W_1 BN(x)))``; with ``project_out=False`` returns the hidden map (last block)."""

    def __init__(self, dim: int, ratio: int, project_out: bool = True):
        super().__init__()
        hidden = dim * ratio
        self.norm = nn.BatchNorm2d(dim)
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.dw = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.fc2 = nn.Conv2d(hidden, dim, 1) if project_out else None
        self.out_dim = dim if project_out else hidden

    def forward(self, x: Tensor) -> Tensor:
        h = self.dw(F.gelu(self.fc1(self.norm(x))))
        return x + self.fc2(h) if self.fc2 is not None else h


class CAREBlock(nn.Module):
    """One CARE block (token mixer, dual interaction, dynamic memory); see the module docstring."""

    def __init__(self, dim: int, mem: int, heads: int | None, ratios: tuple[int, int], last: bool = False,
                 split: str = "asymmetric", memory: bool = True, interaction2: bool = True,
                 layer_scale_init: float = 1e-6):
        super().__init__()
        self.mixer = CARETokenMixer(dim, mem, heads, split)
        self.inter1 = CAREInteraction(dim - mem, ratios[0])
        self.last, self.memory, self.mem = last, memory, mem
        self.inter2 = CAREInteraction(dim, ratios[1], project_out=not last) if (interaction2 or last) else None
        self.gamma = None if last else nn.Parameter(torch.full((dim, 1, 1), float(layer_scale_init)))
        self.out_dim = self.inter2.out_dim if last else dim

    def forward(self, x: Tensor) -> Tensor:
        mem, feat = self.mixer(x)
        if not self.memory:
            mem = torch.zeros_like(mem)
        z = torch.cat([mem, self.inter1(feat)], dim=1)
        if self.inter2 is not None:
            z = self.inter2(z)
        return z if self.last else x + self.gamma * z


class CARENet(nn.Module):
    """The CARE backbone with its classification head (see the module docstring for the arguments)."""

    def __init__(self, num_classes: int, depths: Sequence[int], feat_dims: Sequence[int], mem_dims: Sequence[int],
                 ratios: Sequence[tuple[int, int]], heads: Sequence[int | None], cls_dim: int | None = None,
                 in_chans: int = 3, stem_stride: int = 4, layer_scale_init: float = 1e-6,
                 split: str = "asymmetric", memory: bool = True, interaction2: bool = True):
        super().__init__()
        n = len(depths)
        if not (len(feat_dims) == len(mem_dims) == len(ratios) == len(heads) == n):
            raise ValueError("depths, feat_dims, mem_dims, ratios and heads need one entry per stage")
        dims = [f + m for f, m in zip(feat_dims, mem_dims)]
        self.stem = nn.Sequential(nn.Conv2d(in_chans, dims[0], stem_stride, stride=stem_stride),
                                  nn.BatchNorm2d(dims[0]))
        stages = []
        for i in range(n):
            blocks = []
            if i > 0:
                blocks.append(nn.Sequential(nn.BatchNorm2d(dims[i - 1]), nn.Conv2d(dims[i - 1], dims[i], 2, stride=2)))
            for j in range(depths[i]):
                last = i == n - 1 and j == depths[i] - 1 and cls_dim is not None
                blocks.append(CAREBlock(dims[i], mem_dims[i], heads[i], tuple(ratios[i]), last=last, split=split,
                                        memory=memory, interaction2=interaction2, layer_scale_init=layer_scale_init))
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        out_dim = self.stages[-1][-1].out_dim
        if cls_dim is not None and out_dim != cls_dim:
            raise ValueError(f"cls_dim={cls_dim} but the last block emits r2 * D = {out_dim} channels")
        self.norm = nn.LayerNorm(out_dim)
        self.head = nn.Linear(out_dim, num_classes)
        self.dist_head = nn.Linear(out_dim, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stages(self.stem(x))
        x = self.norm(F.gelu(x.mean((2, 3))))
        return (self.head(x) + self.dist_head(x)) / 2


def care_s0(num_classes: int = 1000, **kw) -> CARENet:
    """CARE-S0: depths (2,4,8,4), widths 32/64/128/256, ratios ((2,2),(2,4),(4,4),(4,4)), cls_dim 1024."""
    return CARENet(num_classes, (2, 4, 8, 4), (24, 48, 96, 192), (8, 16, 32, 64), ((2, 2), (2, 4), (4, 4), (4, 4)),
                   (None, None, 2, 2), cls_dim=1024, **kw)


def care_nano(num_classes: int = 10, in_chans: int = 1, **kw) -> CARENet:
    """CARE-nano for 32x32 inputs: two attention stages, widths 32/64, m = width/4, depths (2,2),
    one linear-attention head per stage (head width = the global slice), no wide last block."""
    kw.setdefault("layer_scale_init", 1e-6)
    return CARENet(num_classes, (2, 2), (24, 48), (8, 16), ((2, 2), (4, 4)), (1, 1), cls_dim=None,
                   in_chans=in_chans, **kw)


def count_macs(model: nn.Module, x: Tensor) -> int:
    """Multiply-accumulates of one forward: convolutions, linear layers and linear attention's products
    (BatchNorm / LayerNorm / activations not counted, as in the usual MAC counters)."""
    total = [0]

    def conv_hook(mod, inp, out):
        total[0] += out.numel() * (mod.in_channels // mod.groups) * mod.kernel_size[0] * mod.kernel_size[1]

    def linear_hook(mod, inp, out):
        total[0] += out.numel() * mod.in_features

    def linattn_hook(mod, inp, out):
        b, n, _ = inp[0].shape
        h, dh, dv = mod.heads, mod.head_dim, mod.attn.message.value_dim
        # K^T V state, phi(Q) S read-out, normaliser phi(Q) z (+ phi(K) sum)
        total[0] += b * n * h * (2 * dh * dv + 2 * dh)

    handles = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
        elif isinstance(m, LinearAttention):
            handles.append(m.register_forward_hook(linattn_hook))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return total[0]
