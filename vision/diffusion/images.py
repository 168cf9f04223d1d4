"""PNG grids of generated images."""
from __future__ import annotations

import numpy as np
from torch import Tensor

__all__ = ["grid", "grid_figure"]


def grid(images: Tensor, nrow: int, pad: int = 1) -> np.ndarray:
    """``(N, 1, S, S)`` images in [-1, 1] -> one ``(rows * (S + pad), nrow * (S + pad))`` array in [0, 1]."""
    if images.dim() != 4 or images.shape[1] != 1:
        raise ValueError(f"grid: expected images of shape (N, 1, S, S), got {tuple(images.shape)}")
    n, s = images.shape[0], images.shape[-1]
    rows = -(-n // nrow)
    out = np.full((rows * (s + pad) + pad, nrow * (s + pad) + pad), 0.5, dtype=np.float32)   # grey separators
    arr = ((images.detach().clamp(-1, 1).cpu().numpy()[:, 0] + 1) / 2)
    for i in range(n):
        r, c = divmod(i, nrow)
        out[pad + r * (s + pad): pad + r * (s + pad) + s, pad + c * (s + pad): pad + c * (s + pad) + s] = arr[i]
    return out


def grid_figure(panels: dict[str, Tensor], nrow: int = 10):
    """A matplotlib figure with one titled grid per entry (left to right)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.6), squeeze=False)
    for ax, (title, images) in zip(axes[0], panels.items()):
        ax.imshow(1 - grid(images, nrow), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    return fig
