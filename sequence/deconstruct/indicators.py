"""Attention indicators of "Deconstructing Attention" (Section 6 of the paper), per layer and head.

For a causal map ``A`` (rows sum to 1 over ``j <= i``) of ``L`` tokens:

- entropy ``-sum_j a_ij log a_ij`` averaged over rows;
- concentration ``||A||_F`` (Frobenius norm of the map);
- head diversity: the standard deviation across heads of ``a_ij``, averaged over the ``L(L+1)/2`` causal entries
  (one value per layer);
- sink: the mean attention to the first token, ``mean_i a_i0``;
- local focus ``LocFoc_N = mean_{i >= N} a_{i, i-N}`` for N = 0..3;

and the pre-softmax logits (scores) over the causal entries: their maximum absolute value and a histogram.
Maps and scores are read with the core's hooks (:func:`graphattn.interpret.capture_attention`, score hooks),
so any :class:`~graphattn.attention.GraphAttention` layer can be measured.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from graphattn.interpret import capture_attention, capture_scores

__all__ = ["map_indicators", "capture_scores", "model_indicators", "LOG_BINS"]

LOG_BINS = np.concatenate([[0.0], np.logspace(-2, 4, 25)])   # |logit| histogram edges (0, 0.01 .. 1e4)


def map_indicators(a: Tensor, local: int = 3) -> dict[str, list[float] | float]:
    """Indicators of causal maps ``a`` (B, H, L, L): per-head lists (averaged over the batch) and the diversity.

    ``a`` may have batch 1 (an input-independent map)."""
    if a.dim() != 4 or a.shape[-1] != a.shape[-2]:
        raise ValueError(f"attention maps must be (B, H, L, L), got {tuple(a.shape)}")
    a = a.double()
    n = a.shape[-1]
    causal = torch.ones(n, n, dtype=torch.bool, device=a.device).tril()
    ent = -(a * torch.log(a.clamp_min(1e-300))).masked_fill(~causal, 0.0).sum(-1).mean(-1)      # (B, H)
    out: dict[str, list[float] | float] = {
        "entropy": ent.mean(0).tolist(),
        "concentration": a.pow(2).sum((-1, -2)).sqrt().mean(0).tolist(),
        "sink": a[..., :, 0].mean(-1).mean(0).tolist(),
    }
    for k in range(local + 1):
        diag = torch.diagonal(a, offset=-k, dim1=-2, dim2=-1)                                   # (B, H, L - k)
        out[f"locfoc_{k}"] = diag.mean(-1).mean(0).tolist()
    std = a.std(dim=1, unbiased=False)                                                           # (B, L, L)
    out["head_diversity"] = float(std[:, causal].mean())
    return out


@torch.no_grad()
def model_indicators(model: nn.Module, tokens: Tensor) -> dict[str, dict]:
    """Indicators and logit statistics of every attention layer of ``model`` on ``tokens`` (B, L).

    A layer called more than once per forward (a fixed stream pushed through it first) is measured on its last
    call, the one on the real input. Returns ``{layer name: {indicator: ..., "logit_max": ..., "logit_hist": ...}}``.
    """
    was_training = model.training
    model.eval()
    try:
        with capture_attention(model) as maps, capture_scores(model) as scores:
            model(tokens)
    finally:
        model.train(was_training)
    out = {}
    for name in maps:
        row = map_indicators(maps[name][-1])
        s = scores[name][-1].abs().cpu().numpy()
        row["logit_max"] = float(s.max())
        row["logit_hist"] = np.histogram(np.clip(s, 0, LOG_BINS[-1]), bins=LOG_BINS)[0].tolist()
        out[name] = row
    return out
