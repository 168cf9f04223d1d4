"""Closed-form in-context regression predictors and the surrogate loss of He et al. (2025).

He, Pan, Chen, Yang, "In-Context Linear Regression Demystified", https://arxiv.org/abs/2503.12734.

- :func:`reduced_predictor`: the trained attention's structure (KQ ~ omega_h I, OV ~ last entry mu_h),
  ``y_hat = sum_h mu_h sum_i softmax_i(omega_h x_i . x_q) y_i``;
- :func:`gd_predictor` and :func:`debiased_gd_predictor`: its first-order expansion in omega,
  ``(c / L) sum_i y_i x_i . x_q`` and ``(c / L) [sum_i y_i x_i . x_q - (sum_i y_i) xbar . x_q]`` with
  ``c = sum_h omega_h mu_h`` (``2 omega mu`` for the paper's +/- pair);
- :func:`ridge_predictor` (Bayes-optimal for ``beta ~ N(0, I/d)`` at ``lambda = sigma^2 d``);
- :func:`surrogate_loss` / :func:`surrogate_gradient_flow`: the paper's loss on ``(omega, mu)`` in R^H.

Shapes: context (B, L, d+1) (last column y), query (B, 1, d+1) or (B, d+1) -> (B,).
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["reduced_predictor", "gd_predictor", "debiased_gd_predictor", "ridge_predictor", "surrogate_loss",
           "optimal_mu", "surrogate_gradient_flow"]


def _split(context: Tensor, query: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    if context.dim() != 3:
        raise ValueError(f"context must be (B, L, d+1), got {tuple(context.shape)}")
    xq = query.reshape(query.shape[0], -1)[:, :-1]
    if xq.shape != (context.shape[0], context.shape[-1] - 1):
        raise ValueError(f"query {tuple(query.shape)} does not match context {tuple(context.shape)}")
    return context[..., :-1], context[..., -1], xq


def reduced_predictor(context: Tensor, query: Tensor, omega: Tensor, mu: Tensor) -> Tensor:
    """``sum_h mu_h sum_i softmax_i(omega_h x_i . x_q) y_i`` for per-head ``omega``, ``mu`` of shape (H,)."""
    x, y, xq = _split(context, query)
    omega, mu = torch.as_tensor(omega, dtype=x.dtype).reshape(-1), torch.as_tensor(mu, dtype=x.dtype).reshape(-1)
    if omega.shape != mu.shape:
        raise ValueError(f"omega {tuple(omega.shape)} and mu {tuple(mu.shape)} must have one entry per head")
    s = torch.einsum("bld,bd->bl", x, xq)                                      # (B, L)
    weights = torch.softmax(omega[:, None, None] * s[None], dim=-1)             # (H, B, L)
    return torch.einsum("h,hbl,bl->b", mu, weights, y)


def gd_predictor(context: Tensor, query: Tensor, coef: float) -> Tensor:
    """One step of gradient descent from zero: ``(coef / L) sum_i y_i x_i . x_q``."""
    x, y, xq = _split(context, query)
    return coef / x.shape[1] * torch.einsum("bl,bld,bd->b", y, x, xq)


def debiased_gd_predictor(context: Tensor, query: Tensor, coef: float) -> Tensor:
    """Centred one-step GD: ``(coef / L) [sum_i y_i x_i . x_q - (sum_i y_i) xbar . x_q]``."""
    x, y, xq = _split(context, query)
    centred = x - x.mean(1, keepdim=True)
    return coef / x.shape[1] * torch.einsum("bl,bld,bd->b", y, centred, xq)


def ridge_predictor(context: Tensor, query: Tensor, lam: float) -> Tensor:
    """``x_q^T (X^T X + lam I)^-1 X^T y``."""
    x, y, xq = _split(context, query)
    gram = x.transpose(1, 2) @ x + lam * torch.eye(x.shape[-1], dtype=x.dtype)
    beta = torch.linalg.solve(gram, (x.transpose(1, 2) @ y.unsqueeze(-1))).squeeze(-1)
    return (beta * xq).sum(-1)


def _kernel(omega: Tensor, dim: int, length: int, noise_var: float) -> Tensor:
    outer = omega[:, None] * omega[None, :]
    return outer + (1 + noise_var) / length * torch.exp(dim * outer)


def surrogate_loss(omega: Tensor, mu: Tensor, dim: int, length: int, noise_var: float) -> Tensor:
    """``1 + s2 - 2 mu.omega + mu^T (omega omega^T + (1 + s2)/L exp(d omega omega^T)) mu`` (exp entrywise)."""
    return 1 + noise_var - 2 * mu @ omega + mu @ _kernel(omega, dim, length, noise_var) @ mu


def optimal_mu(omega: Tensor, dim: int, length: int, noise_var: float) -> Tensor:
    """``mu*(omega) = (omega omega^T + (1 + s2)/L exp(d omega omega^T))^-1 omega``."""
    return torch.linalg.solve(_kernel(omega, dim, length, noise_var), omega)


def surrogate_gradient_flow(omega: Tensor, mu: Tensor, dim: int, length: int, noise_var: float,
                            lr: float = 0.01, steps: int = 20000, record_every: int = 100) -> dict[str, Tensor]:
    """Euler steps of gradient flow on :func:`surrogate_loss` from ``(omega, mu)``; returns the trajectory
    (``step`` (T,), ``omega`` (T, H), ``mu`` (T, H), ``loss`` (T,))."""
    w = omega.detach().clone().double().requires_grad_(True)
    m = mu.detach().clone().double().requires_grad_(True)
    rows = {"step": [], "omega": [], "mu": [], "loss": []}
    for step in range(steps + 1):
        loss = surrogate_loss(w, m, dim, length, noise_var)
        if step % record_every == 0 or step == steps:
            rows["step"].append(step)
            rows["omega"].append(w.detach().clone())
            rows["mu"].append(m.detach().clone())
            rows["loss"].append(loss.detach())
        if step == steps:
            break
        gw, gm = torch.autograd.grad(loss, (w, m))
        with torch.no_grad():
            w -= lr * gw
            m -= lr * gm
    return {"step": torch.tensor(rows["step"]), "omega": torch.stack(rows["omega"]), "mu": torch.stack(rows["mu"]),
            "loss": torch.stack(rows["loss"])}
