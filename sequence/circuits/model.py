"""A small GPT-2-style decoder built from the core's :class:`GraphAttention` (task ``circuits``).

Pre-norm blocks ``x + attn(LN(x))``, ``x + MLP(LN(x))`` (GELU, width 4 d), learned positions, a final
LayerNorm ``ln_f`` and an untied unembedding. Each attention layer is a causal dense GraphAttention (dot
score, softmax, value message, output projection), named ``blocks.<i>.attn`` so that
:mod:`graphattn.interpret` (capture, ablation, activation and path patching) addresses every head.

Deviations from the paper (GPT-2 Medium, 24 x 16, pretrained on WebText): the model is trained from
scratch here on the three synthetic tasks only, with the loss on the answer tokens alone (the final answer,
plus the solved shot's answer of a CO prompt; no filler text, no next-token loss on the rest of the prompt), and is scaled down (defaults 4 layers x 8 heads, d = 128 in
``model/CircuitGPT.yaml``) so that it trains in minutes on one CPU thread; ``circ_mlp: false`` gives the
attention-only variant the spec mentions.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from graphattn.attention import GraphAttention
from graphattn.registry import register_model

__all__ = ["CircuitModel", "CircuitGPT"]


class CircuitModel(nn.Module):
    """Base class of task ``circuits``: ``loss(batch)``, ``evaluate(batch)``, ``diagnostics()``."""

    def diagnostics(self) -> dict[str, float]:
        return {}


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp: bool):
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.attn = GraphAttention(dim, heads=heads, score="dot", normalizer="softmax", update="project")
        self.ln2 = nn.LayerNorm(dim) if mlp else None
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim)) if mlp else None

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        x = x + self.attn(self.ln1(x), mask=mask)
        if self.mlp is not None:
            x = x + self.mlp(self.ln2(x))
        return x


@register_model("CircuitGPT", task="circuits")
class CircuitGPT(CircuitModel):
    def __init__(self, config: Mapping[str, Any], data: Any) -> None:
        super().__init__()
        if getattr(data, "kind", None) != "circuits":
            raise ValueError(f"CircuitGPT reads circuit prompts, but dataset '{config['dataset']}' gives "
                             f"{type(data).__name__}")
        dim, heads, layers = int(config["circ_dim"]), int(config["circ_heads"]), int(config["circ_layers"])
        if dim % heads:
            raise ValueError(f"circ_dim ({dim}) must be divisible by circ_heads ({heads})")
        self.vocab_size, self.max_len = int(data.vocab_size), int(data.max_len)
        self.embed = nn.Embedding(self.vocab_size, dim)
        self.pos = nn.Embedding(self.max_len, dim)
        self.blocks = nn.ModuleList(Block(dim, heads, bool(config["circ_mlp"])) for _ in range(layers))
        self.ln_f = nn.LayerNorm(dim)
        self.unembed = nn.Linear(dim, self.vocab_size, bias=False)
        self.register_buffer("causal", torch.ones(self.max_len, self.max_len, dtype=torch.bool).tril(), persistent=False)
        nn.init.normal_(self.embed.weight, std=0.02)
        nn.init.normal_(self.pos.weight, std=0.02)

    def forward(self, tokens: Tensor) -> Tensor:
        """``(B, L)`` token ids -> ``(B, L, V)`` logits."""
        if tokens.dim() != 2 or tokens.shape[1] > self.max_len:
            raise ValueError(f"tokens must be (B, L) with L <= {self.max_len}, got {tuple(tokens.shape)}")
        n = tokens.shape[1]
        x = self.embed(tokens) + self.pos.weight[:n]
        mask = self.causal[:n, :n]
        for block in self.blocks:
            x = block(x, mask)
        return self.unembed(self.ln_f(x))

    @staticmethod
    def at_last(logits: Tensor, last: Tensor) -> Tensor:
        return logits[torch.arange(logits.shape[0], device=logits.device), last]          # (B, V)

    def loss(self, batch: Mapping[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        full = self(batch["tokens"])
        loss = F.cross_entropy(self.at_last(full, batch["last"]), batch["answer"])
        if "shot" in batch and bool((batch["shot"] >= 0).any()):       # CO's solved shot: a second answer
            has = batch["shot"] >= 0
            shot = self.at_last(full[has], batch["shot"][has])
            loss = loss + F.cross_entropy(shot, batch["shot_answer"][has]) * has.float().mean()
        return loss, {}

    @torch.no_grad()
    def evaluate(self, batch: Mapping[str, Tensor]) -> dict[str, float]:
        """``accuracy``: the top token over the whole vocabulary is on the metric's good side (the answer;
        any later year for greater-than); ``logit_diff``: mean logit of the good side minus the bad side."""
        logits = self.at_last(self(batch["tokens"]), batch["last"])
        top = logits.argmax(-1)
        correct = batch["good"].gather(1, top[:, None]).squeeze(1)
        return {"accuracy": float(correct.float().mean()), "logit_diff": float(logit_diff(logits, batch))}


def logit_diff(logits: Tensor, batch: Mapping[str, Tensor]) -> Tensor:
    """Mean over the batch of (mean logit on ``good``) - (mean logit on ``bad``): logit(IO) - logit(S) for
    IOI, logit(clean color) - logit(corrupt color) for Colored Objects."""
    good, bad = batch["good"].to(logits.dtype), batch["bad"].to(logits.dtype)
    return ((logits * good).sum(-1) / good.sum(-1) - (logits * bad).sum(-1) / bad.sum(-1)).mean()
