"""A Qwen2.5-like decoder LM whose token mixers are the variants of "Deconstructing Attention".

Xue, Moosavi, Aletras, "Deconstructing Attention: Investigating Design Principles for Effective Language
Modeling", 2025, https://arxiv.org/abs/2510.11602. Pre-norm blocks ``h + mix(RMSNorm(h))``,
``h + SwiGLU(RMSNorm(h))``, a final RMSNorm and an unembedding tied to the token embedding (as Qwen2.5-0.5B).
Every mixer except the MLP variant's is a :class:`~sequence.deconstruct.mixers.DecoderAttention` (the core's
GraphAttention on the causal token graph, multi-head, no GQA, projections without bias), named
``blocks.<i>.mixer`` so that :mod:`graphattn.interpret` captures its maps and scores.

Variants (``decon_variant``), placed in every layer (``decon_config: uniform``) or in the odd layers 1, 3, ...
(1-based; 0-based 0, 2, ...) with standard attention in the even ones (``hybrid``):

- ``standard``: softmax(RoPE(q) RoPE(k)^T / sqrt(Dh)).
- ``mlp``: a SwiGLU MLP of hidden width ``round(4 D / 3)`` (3 D h ~ the 4 D^2 of the attention projections).
- ``approximate``: exp replaced by 1 + s + s^2/2, normalised; ``decon_approx_linear: true`` computes it in
  linear time from running sums (same function; the quadratic form is faster at short contexts on CPU).
- ``nonapprox``: query-independent key scores ``<SiLU(W_Q h_j), W_K h_j> / sqrt(Dh)``, causal running
  softmax average (no RoPE: the score of a key does not depend on the receiver).
- ``rndembqk``: a fixed random sequence eps ~ N(0, decon_rnd_sigma^2) (a buffer drawn from ``decon_stream_seed``)
  is pushed through the blocks before each variant layer l; layer l takes Q, K from that stream (after its own
  RMSNorm) and V from the live input, so its attention map is the same for every input.
- ``fixedseqqk``: the same with the embeddings of a fixed real text (the first tokens of the training split).
- ``staticembqk``: Q, K from the static token embeddings Emb(t) of the input (after the layer's RMSNorm).

Deviations, and why: the stream of RndEmbQK / FixedSeqQK is recomputed at every forward with gradients
flowing through the same blocks (the paper's text implies shared blocks; the maps stay input-independent and
could be cached at inference: they depend on the parameters only); RoPE is applied in every dot-product
variant (Standard, Approximate, RndEmb/FixedSeq/StaticEmbQK) as in the paper's Qwen layers; projections have
no bias (Qwen2.5 has q/k/v biases) so that every mixer holds exactly 4 D^2 parameters. Sizes are scaled to a
2-core CPU (defaults in ``model/DeconLM.yaml``).

Shapes: tokens (B, N) -> logits (B, N, V).
"""
from __future__ import annotations

from collections.abc import Mapping
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from graphattn.registry import register_model

from .mixers import DecoderAttention, GatedMLP, RoPEDotScore, SelfGatedKeyScore, TaylorNormalizer

__all__ = ["VARIANTS", "CONFIGS", "RMSNorm", "DecoderBlock", "DeconLM", "layer_variants"]

VARIANTS = ("standard", "mlp", "approximate", "nonapprox", "rndembqk", "fixedseqqk", "staticembqk")
CONFIGS = ("uniform", "hybrid")
STREAM_VARIANTS = ("rndembqk", "fixedseqqk")


def layer_variants(variant: str, config: str, layers: int) -> list[str]:
    """The mixer of each layer: ``uniform`` puts ``variant`` everywhere, ``hybrid`` in 0-based layers 0, 2, ..."""
    if variant not in VARIANTS:
        raise ValueError(f"decon_variant: unknown variant {variant!r}; expected one of {', '.join(VARIANTS)}")
    if config not in CONFIGS:
        raise ValueError(f"decon_config: unknown configuration {config!r}; expected one of {', '.join(CONFIGS)}")
    if config == "uniform":
        return [variant] * layers
    return [variant if i % 2 == 0 else "standard" for i in range(layers)]


class RMSNorm(nn.Module):
    """``x / sqrt(mean(x^2) + eps) * w`` (Zhang & Sennrich 2019). Shapes: (..., D) -> (..., D)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = float(eps)
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def _mixer(variant: str, dim: int, heads: int, approx_linear: bool) -> nn.Module:
    head_dim = dim // heads
    if variant == "mlp":
        return GatedMLP(dim, round(4 * dim / 3))
    if variant == "nonapprox":
        score = SelfGatedKeyScore(dim, heads, head_dim)
    else:
        score = RoPEDotScore(dim, dim, heads, head_dim)
    normalizer = TaylorNormalizer() if variant == "approximate" else "softmax"
    return DecoderAttention(dim, dim, heads, head_dim, score=score, normalizer=normalizer, update="project",
                            bias=False, linear=approx_linear)


class DecoderBlock(nn.Module):
    """Pre-norm block: ``h + mixer(norm1(h))`` (skipped when ``skip_mixer``), then ``h + mlp(norm2(h))``."""

    def __init__(self, variant: str, dim: int, heads: int, ffn: int, approx_linear: bool = False):
        super().__init__()
        self.variant = variant
        self.norm1, self.norm2 = RMSNorm(dim), RMSNorm(dim)
        self.mixer = _mixer(variant, dim, heads, approx_linear)
        self.mlp = GatedMLP(dim, ffn)
        self.skip_mixer = False

    def forward(self, h: Tensor, mask: Tensor, qk: Tensor | None = None) -> Tensor:
        if not self.skip_mixer:
            x = self.norm1(h)
            if self.variant == "mlp":
                h = h + self.mixer(x)
            else:
                h = h + self.mixer(x, mask, qk=None if qk is None else self.norm1(qk))
        return h + self.mlp(self.norm2(h))


class DeconModel(nn.Module):
    """Base class of task ``decon_lm``: ``forward(tokens) -> logits`` and ``loss(tokens)``."""

    def loss(self, tokens: Tensor) -> tuple[Tensor, dict[str, float]]:
        """Mean next-token cross-entropy of ``tokens`` (B, N + 1): predict ``tokens[:, 1:]`` from ``tokens[:, :-1]``."""
        logits = self(tokens[:, :-1])
        loss = F.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten())
        return loss, {}


@register_model("DeconLM", task="decon_lm")
class DeconLM(DeconModel):
    """Qwen2.5-like decoder with a chosen token-mixer variant (module docstring).

    Args (config keys, defaults in ``sequence/deconstruct/model/DeconLM.yaml``): decon_variant, decon_config,
    decon_layers, decon_dim, decon_heads, decon_ffn, decon_rnd_sigma, decon_stream_seed, decon_approx_linear;
    the context length ``lm_context`` (task key).
    """

    def __init__(self, config: Mapping[str, Any], data: Any) -> None:
        super().__init__()
        if getattr(data, "kind", None) != "lm":
            raise ValueError(f"DeconLM reads a token corpus, but dataset '{config['dataset']}' gives {type(data).__name__}")
        dim, heads, layers = int(config["decon_dim"]), int(config["decon_heads"]), int(config["decon_layers"])
        if dim % heads or (dim // heads) % 2:
            raise ValueError(f"decon_dim ({dim}) must be divisible by decon_heads ({heads}) into an even head width (RoPE)")
        if layers < 1:
            raise ValueError(f"decon_layers must be >= 1, got {layers}")
        self.variant, self.config_name = str(config["decon_variant"]), str(config["decon_config"])
        self.kinds = layer_variants(self.variant, self.config_name, layers)
        self.vocab_size, self.max_len = int(data.vocab_size), int(config["lm_context"])
        self.embed = nn.Embedding(self.vocab_size, dim)
        self.blocks = nn.ModuleList(DecoderBlock(kind, dim, heads, int(config["decon_ffn"]),
                                                 bool(config["decon_approx_linear"])) for kind in self.kinds)
        self.norm = RMSNorm(dim)
        self.register_buffer("causal", torch.ones(self.max_len, self.max_len, dtype=torch.bool).tril(), persistent=False)
        gen = torch.Generator().manual_seed(int(config["decon_stream_seed"]))
        if self.variant == "rndembqk":
            noise = torch.randn(1, self.max_len, dim, generator=gen) * float(config["decon_rnd_sigma"])
            self.register_buffer("stream_init", noise)
        elif self.variant == "fixedseqqk":
            fixed = data.train[: self.max_len].clone()
            if fixed.numel() < self.max_len:
                raise ValueError(f"fixedseqqk needs {self.max_len} training tokens for its fixed sequence, got {fixed.numel()}")
            self.register_buffer("stream_tokens", fixed[None])
        nn.init.normal_(self.embed.weight, std=0.02)

    # ------------------------------------------------------------------ streams

    def _stream(self, n: int) -> list[Tensor | None] | None:
        """The fixed stream's state at the input of every layer (``(1, n, D)``), up to the last variant layer."""
        if self.variant not in STREAM_VARIANTS:
            return None
        e = self.stream_init[:, :n] if self.variant == "rndembqk" else self.embed(self.stream_tokens[:, :n])
        last = max(i for i, kind in enumerate(self.kinds) if kind in STREAM_VARIANTS)
        mask = self.causal[:n, :n]
        states: list[Tensor | None] = []
        for i, block in enumerate(self.blocks):
            states.append(e if self.kinds[i] in STREAM_VARIANTS else None)
            if i == last:
                break
            e = block(e, mask)                                   # the stream attends to itself
        return states + [None] * (len(self.blocks) - len(states))

    # ------------------------------------------------------------------ forward

    def forward(self, tokens: Tensor) -> Tensor:
        if tokens.dim() != 2 or not 1 <= tokens.shape[1] <= self.max_len:
            raise ValueError(f"tokens must be (B, N) with 1 <= N <= lm_context = {self.max_len}, got {tuple(tokens.shape)}")
        n = tokens.shape[1]
        h = self.embed(tokens)                                                  # (B, N, D)
        static = h if self.variant == "staticembqk" else None
        stream = self._stream(n)
        mask = self.causal[:n, :n]
        for i, block in enumerate(self.blocks):
            qk = None
            if self.kinds[i] == "staticembqk":
                qk = static
            elif stream is not None and stream[i] is not None:
                qk = stream[i]
            h = block(h, mask, qk=qk)
        return self.norm(h) @ self.embed.weight.T                               # tied unembedding

    # ------------------------------------------------------------------ analysis switches

    @property
    def variant_layers(self) -> list[int]:
        """0-based indices of the layers holding the variant (all of them when uniform)."""
        return [i for i, kind in enumerate(self.kinds) if kind == self.variant]

    @contextmanager
    def skip_variant_layers(self):
        """Hybrid-skip: drop the mixers of the variant layers (residual only) inside the ``with`` block."""
        if self.config_name != "hybrid" or self.variant == "standard":
            raise ValueError("hybrid-skip needs a hybrid model with a non-standard variant")
        for i in self.variant_layers:
            self.blocks[i].skip_mixer = True
        try:
            yield self
        finally:
            for i in self.variant_layers:
                self.blocks[i].skip_mixer = False

    def mixer_parameters(self) -> list[int]:
        """Parameters of each layer's token mixer."""
        return [sum(p.numel() for p in block.mixer.parameters()) for block in self.blocks]
