"""A-SDM's students of the tiny UNet: GRI attention, block pruning with a CondConv that inherits kernels.

Zhu et al., "A-SDM: Accelerating Stable Diffusion through Redundancy Removal and Performance Optimization"
(https://arxiv.org/abs/2312.15516). **Source status**: no code exists and only the abstract could be read (see
``shared/papers/a-sdm.md``). What the abstract confirms, and what this file does with it:

* [abstract] computationally redundant blocks are removed and a *cross-layer multi-expert conditional
  convolution* (CLME-CondConv) is put in their place, its experts inheriting the removed convolution weights;
  [reconstruction] which blocks, how the experts inherit and how the routing is built (below);
* [abstract] GRI attention replaces the expensive self-attention; [reconstruction] its construction
  (``vision/diffusion/asdm.py``: r x r regions + p x p mean-pooled summaries under one softmax);
* [abstract] the student is trained from the teacher with semantic-aware supervision; [reconstruction]
  here the BK-SDM-style noise + output + feature distillation of ``vision/diffusion/distill.py``; the
  paper's semantic-level loss and its *progressive incubation* (training modified blocks one at a time inside
  the frozen teacher) are not implemented.

Students of a :class:`~vision.diffusion.unet.UNet` teacher (every other weight is copied from the teacher):

* **A** (``student: A``): the self-attention block's complete-graph ``GraphAttention`` is replaced by
  ``GRIAttention`` (region ``gri_region``, pool ``gri_pool``, interaction ``gri_mode``) whose inner
  ``GraphAttention`` takes the teacher's q/k/v/output projections unchanged (same function family, sparser graph).
* **B** (``student: B``): A, and in every level of the down and of the up path the *last* ResBlock (always
  C -> C) is removed and replaced by :class:`CondConvBlock` ``h + CondConv(SiLU(GN(h)))`` with
  ``cond_experts`` experts. ``expert_init: inherit`` initialises expert ``e`` from the removed block's
  ``conv{1 + e mod 2}`` (weight and bias: experts 0, 2 <- conv1; 1, 3 <- conv2 for 4 experts) and the
  GroupNorm from the removed block's ``norm1``; ``random`` uses a fresh ``nn.Conv2d``'s default init for every
  expert and a default GroupNorm. In both, routing weights start as ``N(0, 0.01^2)`` (bias 0) so the first mixed
  kernel is about the mean of the experts (for ``inherit``: (conv1 + conv2) / 2). The removed block's
  time-embedding projection has no counterpart (the CondConv is routed by the pooled input only).

:class:`CondConv2d` (Yang et al., "CondConv", https://arxiv.org/abs/1904.04971) with softmax routing:

    r(x) = softmax(W_r GAP(x) + b_r) in R^E,   y = conv(x, sum_e r_e(x) W_e) + sum_e r_e(x) b_e

(the CondConv paper routes with a sigmoid; softmax keeps the mixed kernel a convex combination of the
inherited ones). Computed as one grouped convolution with a kernel per image.

``ASDMStudent`` is the registered model of the ``diffusion-distill`` task: built from the teacher run's
config and weights, then converted. Keys (``vision/diffusion/model/ASDMStudent.yaml``): student, gri_region,
gri_pool, gri_mode, cond_experts, expert_init, and the distillation task's teacher_run and loss weights.

Shapes: as the UNet; CondConv2d x (B, C_in, H, W) -> (B, C_out, H, W).
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from graphattn.registry import register_model

from .asdm import MODES, GRIAttention
from .data import DiffusionData
from .distill import load_teacher
from .unet import ResBlock, UNet

__all__ = ["CondConv2d", "CondConvBlock", "ASDMStudent", "STUDENTS", "EXPERT_INITS", "use_gri", "prune_to_condconv"]

STUDENTS = ("A", "B")
EXPERT_INITS = ("inherit", "random")


class CondConv2d(nn.Module):
    """A ``k x k`` convolution whose kernel is a routed mixture of ``experts`` kernels (module docstring)."""

    def __init__(self, cin: int, cout: int, kernel_size: int = 3, experts: int = 4):
        super().__init__()
        if experts < 1 or kernel_size % 2 == 0:
            raise ValueError(f"CondConv2d: expected experts >= 1 and an odd kernel_size, got {experts}, {kernel_size}")
        self.cin, self.cout, self.k, self.experts = cin, cout, kernel_size, experts
        self.weight = nn.Parameter(torch.empty(experts, cout, cin, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.empty(experts, cout))
        self.route = nn.Linear(cin, experts)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for e in range(self.experts):   # each expert as a fresh nn.Conv2d would be
            conv = nn.Conv2d(self.cin, self.cout, self.k)
            with torch.no_grad():
                self.weight[e].copy_(conv.weight)
                self.bias[e].copy_(conv.bias)
        nn.init.normal_(self.route.weight, std=0.01)
        nn.init.zeros_(self.route.bias)

    def routing(self, x: Tensor) -> Tensor:
        """Expert weights per image: (B, C_in, H, W) -> (B, E), rows summing to 1."""
        return self.route(x.mean((2, 3))).softmax(-1)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        if c != self.cin:
            raise ValueError(f"CondConv2d: expected {self.cin} input channels, got {tuple(x.shape)}")
        r = self.routing(x)                                                          # (B, E)
        kernel = torch.einsum("be,eoikl->boikl", r, self.weight)                     # (B, Cout, Cin, k, k)
        bias = r @ self.bias                                                         # (B, Cout)
        out = F.conv2d(x.reshape(1, b * c, h, w), kernel.reshape(b * self.cout, c, self.k, self.k),
                       bias.reshape(-1), padding=self.k // 2, groups=b)              # (1, B Cout, H, W)
        return out.view(b, self.cout, h, w)


class CondConvBlock(nn.Module):
    """``h + CondConv(SiLU(GN(h)))``: what stands in for a pruned C -> C ResBlock (``emb`` is ignored)."""

    def __init__(self, channels: int, groups: int, experts: int):
        super().__init__()
        self.norm = nn.GroupNorm(min(groups, channels), channels)
        self.conv = CondConv2d(channels, channels, 3, experts)

    def forward(self, x: Tensor, emb: Tensor | None = None) -> Tensor:
        return x + self.conv(F.silu(self.norm(x)))

    @classmethod
    def from_resblock(cls, block: ResBlock, experts: int, init: str) -> CondConvBlock:
        """The CondConv block replacing ``block`` (``init``: ``"inherit"`` or ``"random"``, module docstring)."""
        if init not in EXPERT_INITS:
            raise ValueError(f"expert_init: unknown {init!r}; expected one of {', '.join(EXPERT_INITS)}")
        if not isinstance(block.skip, nn.Identity):
            raise ValueError("CondConvBlock.from_resblock: only a C -> C ResBlock can be replaced by a residual "
                             "CondConv")
        c = block.conv1.out_channels
        new = cls(c, block.norm1.num_groups, experts)
        if init == "inherit":
            convs = (block.conv1, block.conv2)
            with torch.no_grad():
                for e in range(experts):
                    new.conv.weight[e].copy_(convs[e % 2].weight)
                    new.conv.bias[e].copy_(convs[e % 2].bias)
            new.norm.load_state_dict(block.norm1.state_dict())
        return new


def use_gri(unet: UNet, region: int, pool: int, mode: str) -> None:
    """Replace the UNet's self-attention by GRI attention carrying the same projections (in place)."""
    old = unet.self_attn.attn
    side = unet.image_size
    gri = GRIAttention(old.in_dim, old.heads, (side, side), region=region, pool=pool, mode=mode)
    gri.attn.load_state_dict(old.state_dict())
    unet.self_attn.attn = gri


def prune_to_condconv(unet: UNet, experts: int, init: str) -> list[str]:
    """Replace the last ResBlock of every down and up level by a :class:`CondConvBlock` (in place); returns the
    names of the replaced blocks. Levels with a single ResBlock are left alone (it changes the width)."""
    replaced = []
    for path_name in ("down", "up"):
        for i, level in enumerate(getattr(unet, path_name)):
            if len(level) >= 2 and isinstance(level[-1], ResBlock):
                level[-1] = CondConvBlock.from_resblock(level[-1], experts, init)
                replaced.append(f"{path_name}.{i}.{len(level) - 1}")
    if not replaced:
        raise ValueError("prune_to_condconv: no level has two ResBlocks to prune one of (unet_blocks must be >= 2)")
    return replaced


@register_model("ASDMStudent", task="diffusion-distill")
class ASDMStudent(UNet):
    __doc__ = __doc__

    def __init__(self, config: Mapping[str, Any], data: DiffusionData) -> None:
        teacher, tcfg = load_teacher(config, data)
        if not isinstance(teacher, UNet):
            raise TypeError(f"ASDMStudent: the teacher must be a UNet, got {type(teacher).__name__}")
        super().__init__(tcfg, data)
        self.load_state_dict(teacher.state_dict())
        variant, init, mode = str(config["student"]), str(config["expert_init"]), str(config["gri_mode"])
        if variant not in STUDENTS:
            raise ValueError(f"student: unknown {variant!r}; expected one of {', '.join(STUDENTS)}")
        if mode not in MODES:
            raise ValueError(f"gri_mode: unknown {mode!r}; expected one of {', '.join(MODES)}")
        if init not in EXPERT_INITS:
            raise ValueError(f"expert_init: unknown {init!r}; expected one of {', '.join(EXPERT_INITS)}")
        self.variant = variant
        use_gri(self, int(config["gri_region"]), int(config["gri_pool"]), mode)
        self.pruned = prune_to_condconv(self, int(config["cond_experts"]), init) if variant == "B" else []
