"""TCPA: token-coordinated prompt attention on a frozen ViT.

Liu, Zou, Hua, Zhou, "Token Coordinated Prompt Attention is Needed for Visual Prompting", ICML 2025,
https://arxiv.org/abs/2505.02406 (official code: github.com/zhoujiahuan1991/ICML2025-TCPA).

At every block ``l`` of a frozen ViT, prompt tokens are inserted as extra keys/values (deep prompting). The
sequence of keys is ``[CLS, cls-prompts (Pc), image-prompts (Pi), patches (T)]``; only CLS and patches are
queries, and prompts never enter the residual stream. Which prompt a query may read is a per-query mask M:

* **VPT-deep** (``role_split=False, topk=0``): one shared prompt set, every query reads every prompt.
* **R-TCPA** (``role_split=True, topk=0``): CLS reads only cls-prompts, patches only image-prompts.
* **T-TCPA / TCPA** (``topk=k``): each query picks its own top-k prompts of its pool by cosine similarity
  between its block input ``x_t`` and the pool's keys ``K``: ``S_t = topk_j cos(x_t, K_j)``; a pull loss
  ``mean_t mean_{j in S_t} (1 - cos(x_t, K_j))`` (weight ``pool_loss_weight``) draws keys to their tokens.
  During the first ``random_warmup_steps`` training steps the selection is random (the official warm-up
  against pool collapse).

Two masking semantics, chosen by the attention layers' :class:`~graphattn.attention.Normalizer`:

* ``masking="post_softmax"`` (the official code, bit-faithful): ``A = softmax(q k^T / sqrt(d))`` over **all**
  keys, then ``A * M`` without renormalising, so a row sums to ``1 - mass on unselected prompts``
  (:class:`PostSoftmaxMask`).
* ``masking="renormalized"`` (the paper's message-passing reading): softmax over the selected keys only
  (:class:`~graphattn.attention.DstSoftmax` with a boolean mask; SDPA fast path).

Deviations: prompt length 1 and the tiny backbone of ``vision.vit`` (no ViT-B/16 is available offline); the
random warm-up is counted in optimiser steps (the model does not see epochs); the VFPT Fourier prompts, ADVP,
IPrompt and SimAM extras are not implemented.

Letters in shape comments: B batch, N = 1 + T queries, T patches, P prompts of a pool, D width, L layers,
H heads, M = 1 + P_total + T keys.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from graphattn.attention import DstSoftmax, Normalizer, masked_softmax
from graphattn.registry import register_model
from vision.base import VisionData, VisionModel
from vision.vit import SmallViT

__all__ = ["PostSoftmaxMask", "PromptedViT", "TCPA", "prompt_attention_diversity", "feature_diversity",
           "usage_entropy", "METHODS"]

#: method name -> (role_split, uses top-k, has prompts)
METHODS = {"head": (False, False, False), "vpt": (False, False, True), "r_tcpa": (True, False, True),
           "tcpa": (True, True, True)}


class PostSoftmaxMask(Normalizer):
    """Softmax over every key, then multiply by the mask without renormalising (TCPA's official
    ``forward_attn``): masked keys take their share of the softmax mass with them.

    Dense path only: on the sparse path the non-edges whose mass must be removed are not in ``edge_index``.
    With ``mask=None`` it is the plain softmax.
    """

    def edge(self, scores, edge_index, num_dst, num_src):
        raise ValueError("post-softmax masking needs the scores of the masked keys too; use the dense path "
                         "(x of shape (B, N, D) with a mask) or normalizer='dst_softmax' on edge lists")

    def dense(self, scores, mask):
        weights = masked_softmax(scores, None, dim=-1)
        return weights if mask is None else weights * mask.to(weights.dtype)


def _uniform(*shape: int) -> nn.Parameter:
    return nn.Parameter(torch.empty(*shape).uniform_(-1.0, 1.0))


class PromptedViT(nn.Module):
    """A frozen :class:`SmallViT` with deep prompts and token-coordinated prompt masks.

    Args:
        backbone: the ViT; its parameters are frozen when ``freeze_backbone`` (its head is unused).
        num_classes: classes of the new linear head.
        method: ``"head" | "vpt" | "r_tcpa" | "tcpa"`` (see the module docstring).
        pool_size: prompts per pool P (default 8). ``vpt`` uses one pool of ``2 * pool_size`` prompts, so all
            prompted methods have the same number of prompt tokens.
        topk: prompts each token selects in ``tcpa`` (default 3); ignored by the other methods.
        masking: ``"post_softmax"`` (official) or ``"renormalized"`` (default ``"post_softmax"``).
        prompt_dropout: dropout on the prompt tokens (default 0.1).
        random_warmup_steps: training steps with random top-k selection (default 0).
        freeze_backbone: freeze the ViT (default True).
        shared_pool_topk: for tests/ablations, ``topk`` of a single shared pool (``role_split=False``); 0 = all.

    Shapes:
        x (B, C, S, S) -> logits (B, num_classes); ``forward_info`` also returns the per-layer selections
        ``(B, 1, k_c)`` / ``(B, T, k_i)`` (or ``(B, N, k)`` for a shared pool) and the pull loss.
    """

    def __init__(self, backbone: SmallViT, num_classes: int, method: str = "tcpa", pool_size: int = 8,
                 topk: int = 3, masking: str = "post_softmax", prompt_dropout: float = 0.1,
                 random_warmup_steps: int = 0, freeze_backbone: bool = True, shared_pool_topk: int | None = None):
        super().__init__()
        if method not in METHODS:
            raise ValueError(f"method: expected one of {sorted(METHODS)}, got {method!r}")
        if masking not in ("post_softmax", "renormalized"):
            raise ValueError(f"masking: expected 'post_softmax' or 'renormalized', got {masking!r}")
        if pool_size < 1:
            raise ValueError(f"pool_size: expected an int >= 1, got {pool_size}")
        self.backbone, self.method, self.masking = backbone, method, masking
        self.role_split, use_topk, self.prompted = METHODS[method]
        L, D = backbone.depth, backbone.dim
        if method == "tcpa":
            if not 1 <= topk <= pool_size:
                raise ValueError(f"topk: expected 1 <= topk <= pool_size ({pool_size}), got {topk}")
            self.topk = topk
        elif shared_pool_topk is not None and method == "vpt":
            self.topk = shared_pool_topk        # T-TCPA on a single pool (0 = all)
        else:
            self.topk = 0
        self.pool_size = pool_size if self.role_split else 2 * pool_size
        if self.prompted:
            pools = ("cls", "img") if self.role_split else ("shared",)
            if self.topk:                    # keys exist only where a token matches against them
                self.keys = nn.ParameterDict({p: _uniform(L, self.pool_size, D) for p in pools})
            self.prompts = nn.ParameterDict({p: _uniform(L, self.pool_size, D) for p in pools})
        self.prompt_dropout = nn.Dropout(prompt_dropout)
        self.random_warmup_steps = int(random_warmup_steps)
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))
        self.head = nn.Linear(D, num_classes)
        if freeze_backbone:
            for p in backbone.parameters():
                p.requires_grad_(False)
        self.freeze_backbone = freeze_backbone
        norm = PostSoftmaxMask() if masking == "post_softmax" else DstSoftmax()
        for block in backbone.blocks:
            block.attn.normalizer = norm

    def train(self, mode: bool = True):
        super().train(mode)
        if self.freeze_backbone:
            self.backbone.eval()          # a frozen backbone keeps inference behaviour (dropout off)
        return self

    # ------------------------------------------------------------------------------------ selection

    def _select(self, x: Tensor, keys: Tensor, k: int) -> tuple[Tensor, Tensor]:
        """Top-k prompts per token by cosine similarity: x (B, n, D), keys (P, D) -> idx (B, n, k), pull loss."""
        cos = F.normalize(x, dim=-1) @ F.normalize(keys, dim=-1).T                # (B, n, P)
        if self.training and int(self.steps) < self.random_warmup_steps:
            idx = torch.rand_like(cos).topk(k, dim=-1).indices
        else:
            idx = cos.topk(k, dim=-1).indices
        pull = (1.0 - cos.gather(-1, idx)).mean()
        return idx, pull

    def _layer_mask(self, h: Tensor, layer: int) -> tuple[Tensor | None, list[Tensor], Tensor]:
        """Boolean mask (B, N, M) of layer ``layer`` (None = every query reads every key)."""
        B, N, _ = h.shape
        T = N - 1
        P = self.pool_size
        zero = h.new_zeros(())
        if not self.role_split:
            k = self.topk
            if k == 0:
                return None, [], zero
            idx, pull = self._select(h, self.keys["shared"][layer], k)            # (B, N, k)
            prompt_mask = torch.zeros(B, N, P, dtype=torch.bool, device=h.device).scatter_(-1, idx, True)
            tokens = torch.ones(B, N, 1 + T, dtype=torch.bool, device=h.device)
            return torch.cat([tokens[..., :1], prompt_mask, tokens[..., 1:]], -1), [idx], pull
        cls_sel = torch.ones(B, 1, P, dtype=torch.bool, device=h.device)
        img_sel = torch.ones(B, T, P, dtype=torch.bool, device=h.device)
        sel, pull = [], zero
        if self.topk:
            idx_c, pull_c = self._select(h[:, :1], self.keys["cls"][layer], self.topk)   # (B, 1, k)
            idx_i, pull_i = self._select(h[:, 1:], self.keys["img"][layer], self.topk)   # (B, T, k)
            cls_sel = torch.zeros_like(cls_sel).scatter_(-1, idx_c, True)
            img_sel = torch.zeros_like(img_sel).scatter_(-1, idx_i, True)
            sel, pull = [idx_c, idx_i], 0.5 * (pull_c + pull_i)
        # rows: CLS then patches; columns: CLS, cls-prompts, image-prompts, patches
        cls_row = torch.cat([cls_sel, torch.zeros_like(cls_sel)], -1)               # (B, 1, 2P)
        img_row = torch.cat([torch.zeros_like(img_sel), img_sel], -1)               # (B, T, 2P)
        prompt_cols = torch.cat([cls_row, img_row], 1)                              # (B, N, 2P)
        tokens = torch.ones(B, N, 1 + T, dtype=torch.bool, device=h.device)
        return torch.cat([tokens[..., :1], prompt_cols, tokens[..., 1:]], -1), sel, pull

    # ------------------------------------------------------------------------------------ forward

    def prompt_columns(self) -> tuple[int, int]:
        """Key-column range ``[start, stop)`` of the prompts in the attention weights."""
        total = (2 * self.pool_size if self.role_split else self.pool_size) if self.prompted else 0
        return 1, 1 + total

    def forward_info(self, x: Tensor) -> tuple[Tensor, dict[str, Any]]:
        h = self.backbone.embed(x)                                                  # (B, N, D)
        selections, pulls = [], []
        for layer, block in enumerate(self.backbone.blocks):
            if not self.prompted:
                h = block(h)
                continue
            mask, sel, pull = self._layer_mask(h, layer)
            names = ("cls", "img") if self.role_split else ("shared",)
            prompts = torch.cat([self.prompts[n][layer] for n in names], 0)         # (P_total, D)
            prompts = self.prompt_dropout(prompts).expand(h.shape[0], -1, -1)
            h = block(h, extra_keys=prompts, mask=mask)
            selections.append(sel)
            pulls.append(pull)
        if self.training:
            self.steps += 1
        logits = self.head(self.backbone.norm(h[:, 0]))
        pull = torch.stack(pulls).mean() if pulls else h.new_zeros(())
        return logits, {"selections": selections, "pull_loss": pull}

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_info(x)[0]


# ---------------------------------------------------------------------------------------- analysis


def prompt_attention_diversity(weights: Tensor, prompt_cols: tuple[int, int]) -> float:
    """Mean pairwise Jensen-Shannon distance (base 2, in [0, 1]) between patch tokens' attention rows over
    the prompts, each row renormalised to a distribution over prompts.

    Shapes: weights (B, H, N, M) with CLS as query 0 -> float (averaged over images, heads and token pairs).
    """
    a, b = prompt_cols
    p = weights[:, :, 1:, a:b].double()                                            # (B, H, T, P)
    p = p / p.sum(-1, keepdim=True).clamp_min(1e-12)
    pi, pj = p.unsqueeze(3), p.unsqueeze(2)                                        # (B, H, T, 1, P), (B, H, 1, T, P)
    m = 0.5 * (pi + pj)

    def kl(u, v):
        return torch.where(u > 0, u * (u.clamp_min(1e-300).log() - v.clamp_min(1e-300).log()), torch.zeros_like(u)).sum(-1)

    js = (0.5 * kl(pi, m) + 0.5 * kl(pj, m)).clamp_min(0) / math.log(2)            # (B, H, T, T)
    T = p.shape[2]
    off = ~torch.eye(T, dtype=torch.bool)
    return float(js.sqrt()[..., off].mean())


def feature_diversity(tokens: Tensor) -> float:
    """Mean pairwise cosine distance ``1 - cos(h_s, h_t)`` between the patch tokens of a block output (the
    paper's "diversity of the extracted features", measured on features rather than on attention rows, so it
    does not rise just because top-k gives each row a different support).

    Shapes: tokens (B, N, D) with CLS as token 0 -> float (averaged over images and ordered token pairs s != t).
    """
    h = F.normalize(tokens[:, 1:].double(), dim=-1)                                # (B, T, D)
    cos = h @ h.transpose(1, 2)                                                    # (B, T, T)
    T = h.shape[1]
    off = ~torch.eye(T, dtype=torch.bool)
    return float((1.0 - cos[:, off]).mean())


def usage_entropy(indices: Tensor, pool_size: int) -> float:
    """Normalised entropy (in [0, 1]) of how often each prompt of a pool is selected."""
    counts = torch.bincount(indices.reshape(-1), minlength=pool_size).double()
    p = counts / counts.sum()
    nz = p[p > 0]
    return float(-(nz * nz.log()).sum() / math.log(pool_size)) if pool_size > 1 else 0.0


# ---------------------------------------------------------------------------------------- registry


@register_model("TCPA", task="vision")
class TCPA(VisionModel):
    """Registered wrapper: a :class:`SmallViT` (loaded from ``backbone_checkpoint`` when given, else randomly
    initialised) prompt-tuned with :class:`PromptedViT`. Config keys: ``vision/model/TCPA.yaml``."""

    def __init__(self, config: Any, data: VisionData) -> None:
        super().__init__(config, data)
        if data.task_type != "classification":
            raise ValueError(f"TCPA classifies; dataset task_type is {data.task_type!r}")
        backbone = SmallViT(image_size=int(data.meta.get("image_size", 8)), patch_size=int(config["patch_size"]),
                            in_channels=int(data.meta.get("in_channels", 1)), dim=int(config["vit_dim"]),
                            depth=int(config["vit_depth"]), heads=int(config["vit_heads"]),
                            mlp_ratio=float(config["mlp_ratio"]), num_classes=0)
        path = config["backbone_checkpoint"]
        if path:
            path = Path(path)
            if not path.is_file():
                raise FileNotFoundError(f"backbone_checkpoint: no file at {path}")
            state = torch.load(path, map_location="cpu", weights_only=True)
            state = {k: v for k, v in state.items() if not k.startswith("head.")}
            missing, unexpected = backbone.load_state_dict(state, strict=False)
            bad = [k for k in missing if not k.startswith("head.")] + list(unexpected)
            if bad:
                raise ValueError(f"backbone_checkpoint {path}: keys do not match the ViT config: {bad[:5]}")
        self.net = PromptedViT(backbone, data.num_classes, method=str(config["tcpa_method"]),
                               pool_size=int(config["pool_size"]), topk=int(config["topk"]),
                               masking=str(config["masking"]), prompt_dropout=float(config["prompt_dropout"]),
                               random_warmup_steps=int(config["random_warmup_steps"]),
                               freeze_backbone=bool(config["freeze_backbone"]))
        self.pool_loss_weight = float(config["pool_loss_weight"])
        self._pull: Tensor | None = None

    def forward(self, x: Tensor) -> Tensor:
        logits, info = self.net.forward_info(x)
        self._pull = info["pull_loss"]
        return logits

    def aux_loss(self) -> Tensor:
        if self._pull is None or not self.training:
            return super().aux_loss()
        return self.pool_loss_weight * self._pull
