"""Parent trees read out of attention (DependencyViT's dependency tree) and groupings of patches by subtree.

Conventions: a layer's dependency matrix ``A`` is ``(N, N)`` over the tokens present at that layer, indexed
``A[receiver, sender]`` as the dense attention weights of :class:`graphattn.attention.GraphAttention` are
(query/receiver rows, key/sender columns). ``positions`` maps those tokens to original patch indices (tokens
may have been pruned, so ``N`` shrinks with depth).

- Reversed attention (DependencyViT): the sender ``i`` is a child, it chooses its parent
  ``argmax_j A_M[j, i]`` (the receiver it sends the most to); ``axis="sender"``.
- Standard attention (a plain ViT baseline): token ``i`` depends on the token it reads the most from,
  ``argmax_j A[i, j]``; ``axis="receiver"``.

A token that picks itself is a root. Chaining the parent pointers of layers ``0 .. d-1`` maps every patch to
its ancestor at depth ``d``; patches with the same ancestor form one group (subtree).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["dependency_mask", "parent_pointers", "build_tree", "ancestors", "groups_at_depth", "patch_majority_labels"]


def dependency_mask(weights: Tensor) -> Tensor:
    """``A_M = sum_h A[h]``: heads summed. Shapes: (..., H, N, N) -> (..., N, N)."""
    if weights.dim() < 3 or weights.shape[-1] != weights.shape[-2]:
        raise ValueError(f"weights must be (..., H, N, N), got {tuple(weights.shape)}")
    return weights.sum(-3)


def parent_pointers(a_m: Tensor, axis: str = "sender") -> Tensor:
    """Parent of every token of one layer, as a local index. Shapes: (N, N) -> (N,) long.

    ``axis="sender"``: parent of ``i`` = ``argmax_j a_m[j, i]`` (reversed attention); ``"receiver"``:
    ``argmax_j a_m[i, j]`` (standard attention). Ties go to the lowest index.
    """
    if a_m.dim() != 2 or a_m.shape[0] != a_m.shape[1]:
        raise ValueError(f"a_m must be a square (N, N) matrix, got {tuple(a_m.shape)}")
    if axis == "sender":
        return a_m.argmax(0)
    if axis == "receiver":
        return a_m.argmax(1)
    raise ValueError(f"axis must be 'sender' or 'receiver', got {axis!r}")


def build_tree(layers: Sequence[Tensor], positions: Sequence[Tensor], num_patches: int, axis: str = "sender") -> Tensor:
    """Parent pointers of every layer in original patch indices.

    Args:
        layers: per layer, the dependency matrix ``(N_l, N_l)`` (heads already summed).
        positions: per layer, the original patch index of each of its ``N_l`` tokens.
        num_patches: number of patches before any pruning.
        axis: see :func:`parent_pointers`.

    Returns:
        ``(L, num_patches)`` long: ``parents[l, p]`` is the original index of patch ``p``'s parent at layer
        ``l``, or ``-1`` when ``p`` was pruned before layer ``l``.
    """
    if len(layers) != len(positions):
        raise ValueError(f"got {len(layers)} attention layers but {len(positions)} position maps")
    out = torch.full((len(layers), num_patches), -1, dtype=torch.long)
    for l, (a_m, pos) in enumerate(zip(layers, positions)):
        pos = pos.long().cpu()
        if pos.shape != (a_m.shape[0],):
            raise ValueError(f"layer {l}: positions has shape {tuple(pos.shape)}, expected ({a_m.shape[0]},)")
        if int(pos.max()) >= num_patches or int(pos.min()) < 0:
            raise ValueError(f"layer {l}: positions must lie in [0, {num_patches}), got max {int(pos.max())}")
        local = parent_pointers(a_m.detach().cpu(), axis)
        out[l, pos] = pos[local]
    return out


def ancestors(parents: Tensor, depth: int) -> Tensor:
    """Ancestor of every patch after following the pointers of layers ``0 .. depth-1``. (L, P) -> (P,).

    A patch absent at a layer (pruned earlier) keeps its current ancestor there.
    """
    if not 0 <= depth <= parents.shape[0]:
        raise ValueError(f"depth must be in [0, {parents.shape[0]}], got {depth}")
    node = torch.arange(parents.shape[1])
    for l in range(depth):
        nxt = parents[l, node]
        node = torch.where(nxt >= 0, nxt, node)
    return node


def groups_at_depth(parents: Tensor, depth: int) -> Tensor:
    """Group id (0, 1, ... in order of first appearance) of every patch: patches sharing an ancestor."""
    anc = ancestors(parents, depth)
    _, inverse = torch.unique(anc, return_inverse=True)
    return inverse


def patch_majority_labels(mask: Tensor, patch_size: int, min_fraction: float = 0.25) -> Tensor:
    """Label of each ``patch_size`` x ``patch_size`` patch of an integer mask (0 = background), row-major.

    A patch takes its most frequent non-zero label when that label covers at least ``min_fraction`` of
    the patch, else 0 (thin object parts would otherwise vanish into the background).

    Shapes: (H, W) int -> (H/p * W/p,) long.
    """
    if mask.dim() != 2 or mask.shape[0] % patch_size or mask.shape[1] % patch_size:
        raise ValueError(f"mask must be (H, W) with sides divisible by {patch_size}, got {tuple(mask.shape)}")
    h, w = mask.shape[0] // patch_size, mask.shape[1] // patch_size
    patches = mask.long().reshape(h, patch_size, w, patch_size).permute(0, 2, 1, 3).reshape(h * w, -1)
    counts = torch.nn.functional.one_hot(patches, int(patches.max()) + 1).sum(1)   # (P, labels)
    counts[:, 0] = 0
    best = counts.argmax(1)
    enough = counts.gather(1, best[:, None]).squeeze(1) >= min_fraction * patch_size * patch_size
    return torch.where(enough, best, torch.zeros_like(best))
