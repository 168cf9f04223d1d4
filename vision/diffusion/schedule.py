"""DDPM noise schedule, training loss and the DDPM / DDIM update equations.

Ho et al., "Denoising Diffusion Probabilistic Models" (https://arxiv.org/abs/2006.11239) and Song et al.,
"Denoising Diffusion Implicit Models" (https://arxiv.org/abs/2010.02502), epsilon-prediction:

    q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I),            abar_t = prod_{s<=t} (1 - beta_s)
    loss = || eps - eps_theta(sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, t, y) ||^2
    DDIM:  x0_hat = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)
           sigma  = eta sqrt((1 - abar_prev) / (1 - abar_t)) sqrt(1 - abar_t / abar_prev)
           x_prev = sqrt(abar_prev) x0_hat + sqrt(1 - abar_prev - sigma^2) eps + sigma z
    DDPM (ancestral, Ho et al. eq. 11, variance beta_tilde) = DDIM with eta = 1 over consecutive steps.

Timesteps are 0-based: ``t = 0`` is the least noisy step, ``t = T - 1`` the noisiest, and ``t = -1`` stands
for the clean image (``abar = 1``).
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["NoiseSchedule", "SCHEDULES", "ddim_sample"]

SCHEDULES = ("linear", "cosine")

EpsFn = Callable[[Tensor, Tensor], Tensor]   # (x_t (B, ...), t (B,)) -> eps (B, ...)


class NoiseSchedule(nn.Module):
    """The betas of a ``T``-step diffusion and the equations that use them (buffers move with the model).

    Args:
        timesteps: T, the number of diffusion steps (>= 2).
        kind: ``"linear"`` (Ho et al.'s 1e-4 .. 0.02 for T = 1000, rescaled by 1000 / T so that a short
            chain still ends near pure noise; betas <= 0.999) or ``"cosine"`` (Nichol & Dhariwal, s = 0.008, betas <= 0.999).
    """

    def __init__(self, timesteps: int, kind: str = "cosine"):
        super().__init__()
        if isinstance(timesteps, bool) or not isinstance(timesteps, int) or timesteps < 2:
            raise ValueError(f"timesteps: expected an int >= 2, got {timesteps!r}")
        if kind not in SCHEDULES:
            raise ValueError(f"noise_schedule: unknown kind {kind!r}; expected one of {', '.join(SCHEDULES)}")
        self.timesteps, self.kind = timesteps, kind
        if kind == "linear":
            scale = 1000.0 / timesteps
            betas = torch.linspace(1e-4 * scale, 0.02 * scale, timesteps, dtype=torch.float64).clamp(max=0.999)
        else:
            s = 0.008
            steps = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
            f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
            betas = (1 - f[1:] / f[:-1]).clamp(max=0.999)
        abar = torch.cumprod(1 - betas, 0)
        self.register_buffer("betas", betas.float(), persistent=False)
        self.register_buffer("alpha_bar", abar.float(), persistent=False)

    def abar(self, t: Tensor) -> Tensor:
        """``abar_t`` for integer steps ``t`` (``-1`` -> 1), shape of ``t``."""
        padded = torch.cat([self.alpha_bar.new_ones(1), self.alpha_bar])
        return padded[t.long() + 1]

    def _check_t(self, t: Tensor, batch: int) -> None:
        if t.shape != (batch,):
            raise ValueError(f"t must have shape ({batch},) (one step per image), got {tuple(t.shape)}")
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= self.timesteps):
            raise ValueError(f"t must lie in [0, {self.timesteps}), got values in [{int(t.min())}, {int(t.max())}]")

    @staticmethod
    def _bcast(v: Tensor, x: Tensor) -> Tensor:
        return v.view(-1, *([1] * (x.dim() - 1))).to(x.dtype)

    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """A draw of ``x_t ~ q(x_t | x_0)`` with the given ``noise``."""
        self._check_t(t, x0.shape[0])
        a = self._bcast(self.abar(t), x0)
        return a.sqrt() * x0 + (1 - a).sqrt() * noise

    def loss(self, eps_fn: EpsFn, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """The simple DDPM loss ``mean || noise - eps_fn(x_t, t) ||^2`` (mean over every element)."""
        return F.mse_loss(eps_fn(self.q_sample(x0, t, noise), t), noise)

    def predict_x0(self, x_t: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        a = self._bcast(self.abar(t), x_t)
        return (x_t - (1 - a).sqrt() * eps) / a.sqrt()

    def ddim_step(self, x_t: Tensor, t: Tensor, t_prev: Tensor, eps: Tensor, eta: float = 0.0,
                  noise: Tensor | None = None, clip: float | None = None) -> Tensor:
        """One DDIM update from step ``t`` to ``t_prev < t`` (``-1`` = the clean image).

        ``clip`` clamps the predicted ``x0`` to ``[-clip, clip]`` and recomputes ``eps`` from it."""
        if not 0.0 <= eta <= 1.0:
            raise ValueError(f"eta must lie in [0, 1], got {eta}")
        a, ap = self._bcast(self.abar(t), x_t), self._bcast(self.abar(t_prev), x_t)
        x0 = (x_t - (1 - a).sqrt() * eps) / a.sqrt()
        if clip is not None:
            x0 = x0.clamp(-clip, clip)
            eps = (x_t - a.sqrt() * x0) / (1 - a).sqrt()
        sigma = eta * ((1 - ap) / (1 - a)).sqrt() * (1 - a / ap).sqrt()
        out = ap.sqrt() * x0 + (1 - ap - sigma ** 2).clamp_min(0).sqrt() * eps
        if eta > 0:
            if noise is None:
                raise ValueError("ddim_step with eta > 0 needs noise")
            out = out + sigma * noise
        return out

    def ddpm_step(self, x_t: Tensor, t: Tensor, eps: Tensor, noise: Tensor) -> Tensor:
        """Ancestral DDPM step ``t -> t - 1``: posterior mean from eps, variance beta_tilde (zero at t = 0)."""
        beta = self._bcast(self.betas[t.long()], x_t)
        a, ap = self._bcast(self.abar(t), x_t), self._bcast(self.abar(t - 1), x_t)
        mean = (x_t - beta / (1 - a).sqrt() * eps) / (1 - beta).sqrt()
        var = beta * (1 - ap) / (1 - a)
        return mean + var.sqrt() * noise

    def timesteps_for(self, steps: int, start: int | None = None) -> list[int]:
        """``steps`` evenly spaced steps from ``start`` (default ``T - 1``) down to 0 (DDIM's sub-sequence)."""
        start = self.timesteps - 1 if start is None else int(start)
        if not 0 <= start < self.timesteps:
            raise ValueError(f"start step: expected an int in [0, {self.timesteps}), got {start}")
        if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= start + 1:
            raise ValueError(f"sampling steps: expected an int in [1, {start + 1}], got {steps!r}")
        seq = torch.linspace(start, 0, steps).round().long().tolist()
        return list(dict.fromkeys(int(s) for s in seq))


@torch.no_grad()
def ddim_sample(eps_fn: EpsFn, schedule: NoiseSchedule, shape: tuple[int, ...], steps: int, eta: float = 0.0,
                generator: torch.Generator | None = None, clip: float | None = 1.0,
                device: torch.device | str = "cpu", x_T: Tensor | None = None, start: int | None = None,
                progress: Callable | None = None) -> Tensor:
    """Sample ``shape`` images by DDIM over ``steps`` evenly spaced steps (``eta = 1`` with ``steps = T`` is
    ancestral DDPM sampling). Noise comes from ``generator``; ``x_T`` overrides the starting noise, and
    ``start`` the first step (SDEdit: ``x_T`` = a noised image at step ``start``)."""
    x = torch.randn(shape, generator=generator, device=device) if x_T is None else x_T.clone()
    seq = schedule.timesteps_for(steps, start)
    pairs = list(zip(seq, seq[1:] + [-1]))
    for t, t_prev in (progress(pairs) if progress else pairs):
        tt = torch.full((shape[0],), t, dtype=torch.long, device=device)
        eps = eps_fn(x, tt)
        noise = torch.randn(shape, generator=generator, device=device) if eta > 0 else None
        x = schedule.ddim_step(x, tt, torch.full_like(tt, t_prev), eps, eta, noise, clip)
    return x
