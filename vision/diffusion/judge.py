"""Digits classifiers used as judges of generated samples, and simple image statistics.

Two small classifiers on the ``digits-diffusion`` images (pixels in [-1, 1]): ``"cnn"`` (the objective that
guidance searches optimise) and ``"mlp"`` (a held-out judge of another architecture and seed, so that a
search cannot be credited for exploiting one classifier). Each is trained once with a short Adam loop
(an analysis tool, not a registered model) and cached as a ``state_dict``; loading uses ``weights_only=True``.

Statistics of images in [-1, 1]: ``ink`` = mean intensity in [0, 1] (a stroke-thickness proxy: thicker
strokes cover more pixels), ``pixel_variance`` = per-image variance of the [0, 1] intensities (a
saturation / contrast proxy).
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from graphattn.io import atomic_open

__all__ = ["JUDGES", "make_judge", "train_judge", "load_or_train_judge", "confidence", "accuracy", "ink",
           "pixel_variance"]

JUDGES = ("cnn", "mlp")


def make_judge(kind: str, size: int = 8, classes: int = 10) -> nn.Module:
    if kind == "cnn":
        return nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
                             nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64 * (size // 2) ** 2, 128), nn.ReLU(),
                             nn.Dropout(0.3), nn.Linear(128, classes))
    if kind == "mlp":
        return nn.Sequential(nn.Flatten(), nn.Linear(size * size, 256), nn.ReLU(), nn.Dropout(0.2),
                             nn.Linear(256, classes))
    raise ValueError(f"unknown judge {kind!r}; expected one of {', '.join(JUDGES)}")


def train_judge(kind: str, x: Tensor, y: Tensor, seed: int = 0, epochs: int = 40, shift: int = 1) -> nn.Module:
    """Adam, batches of 64, random shifts of up to ``shift`` pixels (so slightly off-centre samples are judged
    fairly). Returns the model in eval mode."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = make_judge(kind, x.shape[-1])
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    net.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(y), generator=g).split(64):
            xb = x[idx]
            if shift:
                dy, dx = (int(v) for v in torch.randint(-shift, shift + 1, (2,), generator=g))
                xb = torch.roll(xb, (dy, dx), (-2, -1))
            loss = F.cross_entropy(net(xb), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return net.eval()


def load_or_train_judge(path: str | Path, kind: str, x: Tensor, y: Tensor, seed: int = 0) -> nn.Module:
    """The judge cached at ``path``, trained on ``(x, y)`` and saved there when the file does not exist."""
    path = Path(path)
    net = make_judge(kind, x.shape[-1])
    if path.exists():
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        return net.eval()
    net = train_judge(kind, x, y, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path) as f:
        torch.save(net.state_dict(), f)
    return net


@torch.no_grad()
def confidence(judge: nn.Module, images: Tensor, y: Tensor) -> Tensor:
    """Per image: the judge's probability of the class ``y`` it was generated for. (N,)"""
    return judge(images.clamp(-1, 1)).softmax(-1).gather(1, y[:, None]).squeeze(1)


@torch.no_grad()
def accuracy(judge: nn.Module, images: Tensor, y: Tensor) -> Tensor:
    """Per image: 1.0 where the judge's top class is ``y``. (N,)"""
    return (judge(images.clamp(-1, 1)).argmax(-1) == y).float()


def ink(images: Tensor) -> Tensor:
    """Per image mean intensity in [0, 1] (stroke thickness proxy). (N,)"""
    return ((images.clamp(-1, 1) + 1) / 2).flatten(1).mean(1)


def pixel_variance(images: Tensor) -> Tensor:
    """Per image variance of the [0, 1] intensities (saturation / contrast proxy). (N,)"""
    return ((images.clamp(-1, 1) + 1) / 2).flatten(1).var(1, unbiased=False)
