"""Robustness and interpretability of a :class:`~sequence.text.base.TextClassifier`'s attention.

All functions take one batch (``tokens``, ``mask``, ``label``, ``cue``) and return per-example tensors, so
a caller averages over a split. Token importance by attention is the readout's weights averaged over heads.

- :func:`readout_attention`: ``(B, T)`` attention over the tokens.
- :func:`saliency`: ``|grad_e logit . e_t|`` per token (gradient x embedding, Simonyan-style).
- :func:`pearson_rows`: per-example Pearson correlation over the real tokens.
- :func:`worst_case_flips`: predictions flipped by one gradient step of norm ``eps`` on the pre-softmax
  scores (the adversary of Attention AT, aimed at the model's own prediction, so no label is needed).
- :func:`permutation_flips`: predictions flipped when the attention weights are permuted among the real
  tokens (Jain & Wallace 2019).
"""
from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from graphattn.interpret import attention_hook

from .adversarial import added_scores, at_perturbation, tracked_scores
from .base import TextClassifier

__all__ = ["readout_attention", "saliency", "pearson_rows", "cue_mass", "worst_case_flips", "permutation_flips"]


def readout_attention(model: TextClassifier, batch: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
    """``(logits (B,), attention (B, T))``: the readout's weights of the query, averaged over heads."""
    seen = []
    with attention_hook(model.readout, lambda layer, w, info: seen.append(w.detach())):
        logits = model(batch)
    return logits, seen[-1].mean(1)[:, 0]


def saliency(model: TextClassifier, batch: Mapping[str, Tensor]) -> Tensor:
    """``(B, T)``: ``|dlogit/de_t . e_t|`` per token (0 on padding)."""
    with torch.enable_grad():
        emb = model.embed(batch["tokens"]).detach().requires_grad_()
        (grad,) = torch.autograd.grad(model.classify(emb, batch["mask"]).sum(), emb)
    return (grad * emb).sum(-1).abs().masked_fill(~batch["mask"], 0.0).detach()


def pearson_rows(a: Tensor, b: Tensor, mask: Tensor) -> Tensor:
    """Pearson correlation of ``a`` and ``b`` over each row's real entries ``(B,)``; NaN where one is constant."""
    m = mask.to(a.dtype)
    n = m.sum(1, keepdim=True)
    da, db = (a - (a * m).sum(1, keepdim=True) / n) * m, (b - (b * m).sum(1, keepdim=True) / n) * m
    den = (da.square().sum(1) * db.square().sum(1)).sqrt()
    return torch.where(den > 0, (da * db).sum(1) / den.clamp_min(1e-30), torch.full_like(den, float("nan")))


def cue_mass(attention: Tensor, cue: Tensor) -> Tensor:
    """``(B,)``: attention mass on the ground-truth important tokens."""
    return (attention * cue.to(attention.dtype)).sum(1)


def worst_case_flips(model: TextClassifier, batch: Mapping[str, Tensor], epsilon: float) -> tuple[Tensor, Tensor]:
    """``(flipped (B,) bool, perturbed logits (B,))`` under ``r = eps g / ||g||`` on the scores, where ``g`` is the
    gradient of the loss against the model's own (clean) prediction."""
    with torch.enable_grad():
        with tracked_scores(model) as slots:
            logits = model(batch)
        pred = (logits > 0).to(logits.dtype).detach()
        loss = F.binary_cross_entropy_with_logits(logits, pred, reduction="sum")
        grads = torch.autograd.grad(loss, [s.delta for s in slots], allow_unused=True)
    rs = [at_perturbation(torch.zeros_like(s.delta) if g is None else g, s.info, epsilon) for s, g in zip(slots, grads)]
    with torch.no_grad(), added_scores(model, lambda n, s, info: rs[n]):
        adv = model(batch)
    return (adv > 0) != pred.bool(), adv


def permutation_flips(model: TextClassifier, batch: Mapping[str, Tensor],
                      generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """``(flipped (B,) bool, permuted logits (B,))`` with each example's readout weights permuted at random over
    its real tokens (the same permutation for every head)."""
    mask = batch["mask"]
    keys = torch.rand(mask.shape, generator=generator).to(mask.device).masked_fill(~mask, float("inf"))
    perm = keys.argsort(1)                     # (B, T): real positions shuffled first (batches are right-padded)

    def permute(layer, weights, info):         # weights (B, H, 1, T)
        return weights.gather(-1, perm[:, None, None, :].expand_as(weights))

    with torch.no_grad():
        clean = model(batch)
        with attention_hook(model.readout, permute):
            out = model(batch)
    return (out > 0) != (clean > 0), out
