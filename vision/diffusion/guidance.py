"""Classifier-free and perturbation guidance, computed in one batched forward pass per step.

    eps = eps_c + (s - 1) (eps_c - eps_u) + w (eps_c - eps_p)

with ``eps_c`` the conditional prediction, ``eps_u`` the null-label one (Ho & Salimans' classifier-free guidance,
scale ``s``; ``s = 1`` is plain conditional sampling and skips that branch) and ``eps_p`` the conditional
prediction of a *perturbed* model (PAG-style guidance, scale ``w``; ``w = 0`` skips it). With ``s > 1`` this is
``eps_u + s (eps_c - eps_u) + w (eps_c - eps_p)``, the form of the HeadHunter/SoftPAG paper. The branches are
stacked along the batch axis ``[cond | uncond | perturbed]`` and the perturbation is asked to act on the
perturbed rows only (``perturbation.apply(rows)``, a context manager), as diffusers' PAG processors do.
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import ContextManager, Protocol

import torch
from torch import Tensor

from .base import DiffusionModel

__all__ = ["Perturbation", "GuidedEps"]


class Perturbation(Protocol):
    def apply(self, rows: slice) -> ContextManager:
        """Perturb the model while the context is open, for batch rows ``rows`` only."""


class GuidedEps:
    """``eps(x_t, t)`` of ``model`` for labels ``y`` with guidance (see the module docstring).

    Args:
        model: a :class:`DiffusionModel`.
        y: (B,) class labels of the images being sampled.
        cfg_scale: s >= 0 (1 = no classifier-free guidance).
        pag_scale: w >= 0 (0 = no perturbation guidance).
        perturbation: an object with ``apply(rows)``; required when ``pag_scale > 0``.
    """

    def __init__(self, model: DiffusionModel, y: Tensor, cfg_scale: float = 1.0, pag_scale: float = 0.0,
                 perturbation: Perturbation | None = None) -> None:
        if cfg_scale < 0 or pag_scale < 0:
            raise ValueError(f"guidance scales must be >= 0, got cfg_scale={cfg_scale}, pag_scale={pag_scale}")
        if pag_scale > 0 and perturbation is None:
            raise ValueError("pag_scale > 0 needs a perturbation (e.g. vision.diffusion.pag.SoftPAG)")
        self.model, self.y, self.s, self.w, self.perturbation = model, y, float(cfg_scale), float(pag_scale), perturbation

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        b = x.shape[0]
        xs, ys = [x], [self.y]
        if self.s != 1.0:
            xs.append(x)
            ys.append(torch.full_like(self.y, self.model.null_class))
        rows = None
        if self.w > 0:
            rows = slice(len(xs) * b, (len(xs) + 1) * b)
            xs.append(x)
            ys.append(self.y)
        ctx = self.perturbation.apply(rows) if rows is not None else nullcontext()
        with ctx:
            out = self.model(torch.cat(xs), t.repeat(len(xs)), torch.cat(ys))
        parts = out.split(b)
        eps_c, eps = parts[0], parts[0]
        if self.s != 1.0:
            eps = eps + (self.s - 1.0) * (eps_c - parts[1])
        if self.w > 0:
            eps = eps + self.w * (eps_c - parts[-1])
        return eps
