"""Spice-E's cross-entity attention on the tiny digits DiT: a guidance shape steers the target's queries.

Sella, Fiebelman, Atia, Averbuch-Elor, "Spice-E: Structural Priors in 3D Diffusion using Cross-Entity
Attention" (SIGGRAPH 2024, https://arxiv.org/abs/2311.17834). In every block of a pretrained denoiser,

    K, V = X W_k, X W_v                               (keys and values from the target only)
    Q    = X W_q1 + Z (LN_g(G) W_q2) + b_Z            (Z: a token-mixing N x N map, zero-initialised)

with ``W_q1 = W_q2 = W_q`` copied from the pretrained block, ``LN_g`` a copy of the block's first LayerNorm and
``G`` the guidance image's tokens through the same input embedding (+ position), not updated across blocks.
As message passing: receivers carry ``[target ; guidance]`` features, senders are the target tokens only, so
the guidance changes *where* a target token looks, never *what* it reads. Because ``Z = 0`` and ``b_Z = 0`` at
conversion, the converted model's output is bit-identical to the pretrained one (both use the fused SDPA
kernel on identical q, k, v).

Miniature of the paper (deviations): the pretrained model is the class-conditional digits DiT called with the
null label (the "unconditional" model); the "text" condition is the class label, dropped with probability
``class_dropout`` while fine-tuning (paper: 0.5); the guidance shape of a digit is its 2x2-block average,
binarised (:func:`abstraction`); ``mixing="diagonal"`` (a per-token gate instead of the full token-mixing Z)
is the ablation of the token mixer, ``inject="key"`` (the guidance term added to the keys; values stay the
target's) and ``inject="value"`` (the term added to the values instead: the guidance then changes *what* a token
reads, not where it looks) the ablations of where the guidance enters. Shap-E's transmitter / renderer have no counterpart: the images are the
shapes.

Shapes: x_t, g (B, 1, S, S), t (B,), y (B,) -> eps (B, 1, S, S).
"""
from __future__ import annotations

import copy
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from graphattn.attention import GraphAttention
from graphattn.attention.messages import Message, ValueMessage
from graphattn.attention.scores import DotProductScore, Score

from .dit import DiT, DiTBlock, _modulate, timestep_embedding
from .task import DiffusionTask

__all__ = ["CrossEntityScore", "CrossEntityMessage", "CrossEntityBlock", "SpiceE", "SpiceTask", "abstraction", "iou",
           "MIXINGS", "INJECTS"]

MIXINGS = ("full", "diagonal")
INJECTS = ("query", "key", "value")


def _add_guidance_params(module: nn.Module, source: nn.Linear, tokens: int, mixing: str) -> None:
    """``module.g_proj`` (a copy of ``source``'s weight: W_q2 = W_q, or W_k / W_v), the zero-initialised token mixer
    ``module.z`` ((N, N) for ``"full"``, (N, 1) for ``"diagonal"``) and bias ``module.z_bias`` (N, 1)."""
    if mixing not in MIXINGS:
        raise ValueError(f"mixing: unknown {mixing!r}; expected one of {', '.join(MIXINGS)}")
    module.mixing = mixing
    module.g_proj = nn.Linear(source.in_features, source.out_features, bias=False)
    with torch.no_grad():
        module.g_proj.weight.copy_(source.weight)
    module.z = nn.Parameter(torch.zeros(tokens, tokens) if mixing == "full" else torch.zeros(tokens, 1))
    module.z_bias = nn.Parameter(torch.zeros(tokens, 1))


def _guidance_term(module: nn.Module, g: Tensor, where: str) -> Tensor:
    """``Z (W_2 g) + b_Z`` for guidance features g (..., N, D) -> (..., N, H * Dh)."""
    if g.shape[-2] != module.z.shape[0]:
        raise ValueError(f"{where}: Z is tied to {module.z.shape[0]} tokens, got {g.shape[-2]}")
    g = module.g_proj(g)
    return (module.z @ g if module.mixing == "full" else module.z * g) + module.z_bias


def abstraction(x: Tensor, block: int = 2) -> Tensor:
    """The guidance shape of images in [-1, 1]: ``block x block`` averages, binarised at mid-grey, back to
    full size, in {-1, 1}. (B, 1, S, S) -> (B, 1, S, S)"""
    pooled = F.avg_pool2d(x, block)
    return F.interpolate((pooled > 0).float() * 2 - 1, scale_factor=block, mode="nearest")


def iou(a: Tensor, b: Tensor) -> Tensor:
    """Per image IoU of the positive pixels of two {-1, 1} (or [-1, 1], split at 0) masks. (B,)"""
    a, b = (a > 0).flatten(1), (b > 0).flatten(1)
    union = (a | b).sum(1).clamp_min(1)
    return (a & b).sum(1) / union


class CrossEntityScore(Score):
    """Scaled dot product whose query also reads the guidance through a zero-initialised token mixer.

    ``project(x_dst, x_src)``: ``x_dst = [x ; LN_g(g)]`` (..., N, 2D), ``x_src = x`` (..., N, D) ->
    ``q = W_q1 x + Z (W_q2 LN_g(g)) + b_Z``, ``k = W_k x``, per head. With ``inject="key"`` (the ablation) the
    guidance term goes to the keys instead: ``q = W_q x``, ``k = W_k1 x + Z (W_k2 LN_g(g)) + b_Z`` (guidance and
    target share the token slots, so the sender's guidance is read from the same position of ``x_dst``).

    Args:
        base: the pretrained block's :class:`DotProductScore` (W_q1 = W_q2 = its W_q, W_k copied).
        tokens: N, the fixed number of tokens (Z is N x N, tied to the token order).
        mixing: ``"full"`` (Z an N x N matrix) or ``"diagonal"`` (a per-token gate, no mixing).
        inject: ``"query"`` (Spice-E), ``"key"``, or ``"value"`` (then this score holds no guidance term: q = W_q x,
            k = W_k x, with x the target half of the senders' ``[target ; guidance]`` features, and
            :class:`CrossEntityMessage` adds the term to the values).
    """

    sdpa = True

    def __init__(self, base: DotProductScore, tokens: int, mixing: str = "full", inject: str = "query"):
        super().__init__()
        if mixing not in MIXINGS:
            raise ValueError(f"mixing: unknown {mixing!r}; expected one of {', '.join(MIXINGS)}")
        if inject not in INJECTS:
            raise ValueError(f"inject: unknown {inject!r}; expected one of {', '.join(INJECTS)}")
        self.heads, self.head_dim, self.scale, self.mixing, self.inject = base.heads, base.head_dim, base.scale, mixing, inject
        self.dim = base.q.in_features
        self.q1, self.k = copy.deepcopy(base.q), copy.deepcopy(base.k)
        if inject != "value":
            _add_guidance_params(self, base.q if inject == "query" else base.k, tokens, mixing)   # W_q2 (or W_k2), Z, b_Z

    def project(self, x_dst: Tensor, x_src: Tensor) -> tuple[Tensor, Tensor]:
        if x_dst.shape[-1] != 2 * self.dim:
            raise ValueError(f"CrossEntityScore: receivers must carry [target ; guidance] features of width "
                             f"{2 * self.dim}, got {x_dst.shape[-1]}")
        x, g = x_dst.split(self.dim, -1)
        if self.inject == "value":                      # senders carry [target ; guidance] for the message
            x_src = x_src[..., :self.dim]
        q, k = self.q1(x), self.k(x_src)
        if self.inject == "query":
            q = q + _guidance_term(self, g, "CrossEntityScore")              # Z (N, N) @ (..., N, H * Dh)
        elif self.inject == "key":
            k = k + _guidance_term(self, g, "CrossEntityScore")
        return q.unflatten(-1, (self.heads, self.head_dim)), k.unflatten(-1, (self.heads, self.head_dim))

    def edge(self, q, k, edge_index, edge_type=None):
        return (q.index_select(0, edge_index[1]) * k.index_select(0, edge_index[0])).sum(-1) * self.scale

    def dense(self, q, k):
        return torch.matmul(q, k.transpose(-1, -2)) * self.scale


class CrossEntityMessage(Message):
    """The ``inject="value"`` ablation: values ``W_v x + Z (W_v2 LN_g(g)) + b_Z`` from senders that carry
    ``[target ; guidance]`` features (W_v2 = W_v copied, Z and b_Z zero-initialised, so at conversion the values
    are the pretrained ones). Shapes: x_src (..., N, 2D) -> (..., N, H, Dv)."""

    def __init__(self, base: ValueMessage, tokens: int, mixing: str = "full"):
        super().__init__()
        self.heads, self.value_dim = base.heads, base.value_dim
        self.v = copy.deepcopy(base.v)
        self.dim = base.v.in_features
        _add_guidance_params(self, base.v, tokens, mixing)

    def project(self, x_src: Tensor) -> Tensor:
        if x_src.shape[-1] != 2 * self.dim:
            raise ValueError(f"CrossEntityMessage: senders must carry [target ; guidance] features of width "
                             f"{2 * self.dim}, got {x_src.shape[-1]}")
        x, g = x_src.split(self.dim, -1)
        v = self.v(x) + _guidance_term(self, g, "CrossEntityMessage")
        return v.unflatten(-1, (self.heads, self.value_dim))


class CrossEntityBlock(nn.Module):
    """A :class:`DiTBlock` converted to cross-entity attention (every weight copied from it)."""

    def __init__(self, block: DiTBlock, tokens: int, mixing: str = "full", inject: str = "query"):
        super().__init__()
        attn = block.attn
        if not isinstance(attn.score, DotProductScore):
            raise TypeError(f"CrossEntityBlock converts a dot-product attention, got {type(attn.score).__name__}")
        dim = attn.in_dim
        self.norm1, self.norm2 = copy.deepcopy(block.norm1), copy.deepcopy(block.norm2)
        self.norm_g = copy.deepcopy(block.norm1)
        self.mlp, self.ada = copy.deepcopy(block.mlp), copy.deepcopy(block.ada)
        self.guided_senders = inject == "value"
        if self.guided_senders and not isinstance(attn.message, ValueMessage):
            raise TypeError(f"inject='value' converts a ValueMessage, got {type(attn.message).__name__}")
        message = CrossEntityMessage(attn.message, tokens, mixing) if self.guided_senders else copy.deepcopy(attn.message)
        self.attn = GraphAttention(2 * dim, dim, attn.heads, attn.head_dim, src_dim=2 * dim if self.guided_senders else dim,
                                   score=CrossEntityScore(attn.score, tokens, mixing, inject),
                                   message=message, update=copy.deepcopy(attn.update))

    def forward(self, h: Tensor, c: Tensor, g: Tensor) -> Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.ada(c)[:, None].chunk(6, -1)
        x = _modulate(self.norm1(h), shift1, scale1)
        receivers = torch.cat([x, self.norm_g(g)], -1)
        h = h + gate1 * self.attn(receivers, x_src=receivers if self.guided_senders else x)
        return h + gate2 * self.mlp(_modulate(self.norm2(h), shift2, scale2))


class SpiceE(nn.Module):
    """A pretrained :class:`DiT` with every block converted to cross-entity attention.

    ``forward(x_t, t, y, g)``; ``loss(batch)`` with ``batch["g"]`` the guidance images. The pretrained model is
    deep-copied (it is left untouched)."""

    def __init__(self, pretrained: DiT, mixing: str = "full", inject: str = "query"):
        super().__init__()
        base = copy.deepcopy(pretrained)
        self.schedule, self.num_classes, self.dim = base.schedule, base.num_classes, base.dim
        self.image_size, self.in_channels = base.image_size, base.in_channels
        self.patchify, self.unpatchify = base.patchify, base.unpatchify
        self.embed, self.pos, self.t_mlp, self.y_emb = base.embed, base.pos, base.t_mlp, base.y_emb
        self.norm, self.final_ada, self.out = base.norm, base.final_ada, base.out
        tokens = base.grid ** 2
        self.blocks = nn.ModuleList(CrossEntityBlock(b, tokens, mixing, inject) for b in base.blocks)

    @property
    def null_class(self) -> int:
        return self.num_classes

    def forward(self, x_t: Tensor, t: Tensor, y: Tensor, g: Tensor) -> Tensor:
        if g.shape != x_t.shape:
            raise ValueError(f"SpiceE: guidance g must have the shape of x_t {tuple(x_t.shape)}, got {tuple(g.shape)}")
        c = self.t_mlp(timestep_embedding(t, self.dim)) + self.y_emb(y)
        h = self.embed(self.patchify(x_t)) + self.pos
        gt = self.embed(self.patchify(g)) + self.pos                           # guidance tokens, fixed across blocks
        for block in self.blocks:
            h = block(h, c, gt)
        shift, scale = self.final_ada(c)[:, None].chunk(2, -1)
        return self.unpatchify(self.out(_modulate(self.norm(h), shift, scale)))

    def loss(self, batch: Mapping[str, Tensor]) -> Tensor:
        y = torch.where(batch["drop"], torch.full_like(batch["y"], self.null_class), batch["y"])
        return self.schedule.loss(lambda x_t, t: self(x_t, t, y, batch["g"]), batch["x"], batch["t"], batch["noise"])


class SpiceTask(DiffusionTask):
    """The ``diffusion`` task with each batch's guidance shape ``g = abstraction(x)`` added (fine-tuning and
    evaluation of :class:`SpiceE`). Build it with the data of an existing task: ``SpiceTask(config, data)``."""

    def _draw(self, x, y, g):
        batch = super()._draw(x, y, g)
        batch["g"] = abstraction(x)
        return batch

    def build_model(self) -> nn.Module:
        raise TypeError("SpiceTask fine-tunes a SpiceE built from a pretrained DiT; pass the model to the Trainer")
