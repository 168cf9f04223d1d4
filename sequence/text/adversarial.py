"""Adversarial training on attention scores: Attention AT / iAT (Kitada & Iyatomi, "Attention Meets
Perturbations: Robust and Interpretable Attention with Adversarial Training", IEEE Access 2021,
https://arxiv.org/abs/2009.12064), through the score hook of every :class:`~graphattn.attention.GraphAttention`
layer, so any model built from the layer trains this way.

With ``s`` the pre-softmax scores of a batch, ``L(s)`` the loss and ``g = dL/ds`` (taken through a zero
perturbation added by the hook, as in the paper):

- ``vanilla``: ``L``.
- ``rp`` (Attention RP): ``L(s) + lambda L(s + r)``, ``r`` Gaussian noise scaled to ``||r_i|| = eps``.
- ``at`` (Attention AT): ``r_i = eps g_i / ||g_i||``.
- ``iat`` (Attention iAT, after Sato et al. 2018's iAT): directions towards the other examples of the batch,
  ``d_ik = (s_k - s_i) / ||s_k - s_i||`` (over the positions real in both), weights ``alpha_ik = d_ik . g_i``
  (the gradient of ``L`` with respect to ``alpha`` at 0), ``r_i = eps u_i / ||u_i||`` with
  ``u_i = sum_k alpha_ik d_ik``. Since ``u_i . g_i = sum_k alpha_ik^2 >= 0`` the step never lowers the loss
  to first order.

``i`` is an example: a batch row on the dense path, a receiver node on the sparse path; norms run over the
example's real entries only (all heads and queries of a layer together; each layer is perturbed with its own
norm ``eps``). Padding is never perturbed.

Deviations, on purpose: the clean forward already carries the zero perturbation (its value is the clean
loss), so a step is two forwards, not the paper's three; ``g`` comes from ``torch.autograd.grad`` and ``r`` is
a constant, so parameter gradients are those of ``L + lambda L_adv`` once (the released code counts the clean
loss twice, see the spec's pitfalls); iAT follows the paper's definition, not the released code (which
normalises over the wrong axis and never uses alpha).
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from itertools import count
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from graphattn.attention import AttentionInfo
from graphattn.interpret import attention_layers
from graphattn.ops import segment_sum

__all__ = ["MODES", "check_mode", "ScoreSlot", "tracked_scores", "added_scores", "at_perturbation",
           "iat_perturbation", "random_perturbation", "perturbed_loss"]

MODES = ("vanilla", "rp", "at", "iat")


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"at_mode: unknown adversarial-training mode {mode!r}; expected one of {', '.join(MODES)}")
    return mode


@dataclass
class ScoreSlot:
    """One attention call seen by :func:`tracked_scores`: the zero perturbation that was added (``delta``,
    requires grad), the scores before it (detached) and what the layer said about them."""

    delta: Tensor
    scores: Tensor
    info: AttentionInfo


@contextmanager
def _score_hooks(model: nn.Module, hook) -> Iterator[None]:
    layers = attention_layers(model)
    if not layers:
        raise ValueError(f"{type(model).__name__} has no GraphAttention layer whose scores could be perturbed")
    handles = [layer.register_score_hook(hook) for layer in layers.values()]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@contextmanager
def tracked_scores(model: nn.Module) -> Iterator[list[ScoreSlot]]:
    """Every attention call inside the block adds a zero perturbation that requires grad; the list fills with
    one :class:`ScoreSlot` per call, in call order."""
    slots: list[ScoreSlot] = []

    def hook(layer, scores, info):
        delta = torch.zeros_like(scores, requires_grad=True)
        slots.append(ScoreSlot(delta, scores.detach(), info))
        return scores + delta

    with _score_hooks(model, hook):
        yield slots


@contextmanager
def added_scores(model: nn.Module, fill: Callable[[int, Tensor, AttentionInfo], Tensor]) -> Iterator[None]:
    """Inside the block the ``n``-th attention call adds ``fill(n, scores, info)`` to its scores."""
    calls = count()

    def hook(layer, scores, info):
        return scores + fill(next(calls), scores, info)

    with _score_hooks(model, hook):
        yield


# ----------------------------------------------------------------------------------------- perturbations

def _real(t: Tensor, info: AttentionInfo) -> Tensor:
    """``t`` with the dense path's missing edges set to 0."""
    return t if info.mask is None else t.masked_fill(~info.mask, 0.0)


def _example_norm(t: Tensor, info: AttentionInfo) -> Tensor:
    """Each example's L2 norm, broadcastable to ``t`` (dense: per batch row; sparse: per receiver)."""
    if info.path == "dense":
        return t.flatten(1).norm(dim=1).view(-1, *[1] * (t.dim() - 1))
    dst = info.edge_index[1]
    per_node = segment_sum(t.square().sum(-1), dst, int(dst.max()) + 1 if dst.numel() else 0)
    return per_node.sqrt()[dst].unsqueeze(-1)


def _unit(t: Tensor, info: AttentionInfo, epsilon: float) -> Tensor:
    t = _real(t, info)
    return epsilon * t / _example_norm(t, info).clamp_min(1e-12)


def at_perturbation(grad: Tensor, info: AttentionInfo, epsilon: float) -> Tensor:
    """``eps g_i / ||g_i||`` per example (zero where the gradient is zero)."""
    return _unit(grad, info, epsilon)


def random_perturbation(like: Tensor, info: AttentionInfo, epsilon: float,
                        generator: torch.Generator | None = None) -> Tensor:
    """Gaussian noise of norm ``eps`` per example (Attention RP)."""
    noise = torch.randn(like.shape, generator=generator, dtype=like.dtype, device="cpu").to(like.device)
    return _unit(noise, info, epsilon)


def iat_perturbation(scores: Tensor, grad: Tensor, info: AttentionInfo, epsilon: float) -> Tensor:
    """Attention iAT's perturbation (module docstring) for dense scores ``(B, ...)``."""
    if info.path != "dense":
        raise ValueError("Attention iAT compares the score vectors of the examples of a batch and needs the dense "
                         "path (x of shape (B, N, D)); use at_mode 'at' on the sparse path")
    b = scores.shape[0]
    real = torch.ones_like(scores, dtype=torch.bool) if info.mask is None else info.mask.expand_as(scores)
    m = real.reshape(b, -1).to(scores.dtype)                               # (B, P)
    s, g = scores.reshape(b, -1) * m, grad.reshape(b, -1) * m              # (B, P)
    d = m[:, None, :] * m[None, :, :] * (s[None, :, :] - s[:, None, :])    # (B_i, B_k, P): towards example k
    d = d / d.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    alpha = torch.einsum("ikp,ip->ik", d, g)                               # dL/d alpha_ik at alpha = 0
    u = torch.einsum("ik,ikp->ip", alpha, d)                               # (B, P)
    return _unit(u.view_as(scores), info, epsilon)


# ----------------------------------------------------------------------------------------- the loss

def perturbed_loss(model: nn.Module, batch: Any, loss_fn: Callable[[nn.Module, Any], Tensor], mode: str,
                   epsilon: float, lam: float = 1.0,
                   generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, float]]:
    """The training loss of ``mode`` (module docstring): ``(total, {"clean_loss", "adv_loss"})``.

    ``loss_fn(model, batch)`` runs the model and returns the scalar loss; it is called twice (clean, then
    perturbed) except for ``vanilla``.
    """
    check_mode(mode)
    if mode == "vanilla":
        return loss_fn(model, batch), {}
    if mode == "rp":
        clean = loss_fn(model, batch)
        with added_scores(model, lambda n, s, info: random_perturbation(s, info, epsilon, generator)):
            adv = loss_fn(model, batch)
    else:
        with tracked_scores(model) as slots:
            clean = loss_fn(model, batch)
        grads = torch.autograd.grad(clean, [slot.delta for slot in slots], retain_graph=True, allow_unused=True)
        rs = []
        for slot, g in zip(slots, grads):
            g = torch.zeros_like(slot.delta) if g is None else g.detach()
            rs.append(at_perturbation(g, slot.info, epsilon) if mode == "at"
                      else iat_perturbation(slot.scores, g, slot.info, epsilon))
        with added_scores(model, lambda n, s, info: rs[n]):
            adv = loss_fn(model, batch)
    return clean + lam * adv, {"clean_loss": clean.item(), "adv_loss": adv.item()}


def config_mode(config: Mapping[str, Any]) -> tuple[str, float, float]:
    """``(at_mode, at_epsilon, at_lambda)`` from a config, checked."""
    mode, eps, lam = check_mode(str(config["at_mode"])), float(config["at_epsilon"]), float(config["at_lambda"])
    if eps < 0 or lam < 0:
        raise ValueError(f"at_epsilon and at_lambda must be >= 0, got {eps} and {lam}")
    return mode, eps, lam
