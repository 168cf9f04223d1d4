"""Read, ablate, replace or interpolate any head's attention without touching model code.

Every :class:`~graphattn.attention.GraphAttention` layer exposes ``register_attention_hook``; the tools
here are hooks and context managers built on it. Head-indexing works on both paths: sparse weights are
``(E, H)`` (heads last), dense weights ``(B, H, Nq, Nk)`` (heads second).

Example::

    with capture_attention(model) as store:
        model(x)
    store["blocks.0.attn"]            # list of AttentionWeights-like tensors, one per call
    with ablate_heads(model.blocks[0].attn, [1, 3]):
        model(x)                      # heads 1 and 3 of that layer send nothing
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator, Sequence

import torch
from torch import Tensor, nn

from .attention.layer import AttentionInfo, GraphAttention

__all__ = ["attention_layers", "capture_attention", "ablate_heads", "replace_heads", "interpolate_heads",
           "attention_hook"]


def attention_layers(model: nn.Module) -> dict[str, GraphAttention]:
    """All attention layers of ``model`` by qualified name."""
    return {name: m for name, m in model.named_modules() if isinstance(m, GraphAttention)}


def _head_axis(info: AttentionInfo) -> int:
    return -1 if info.path == "sparse" else 1


def _select(weights: Tensor, heads: Sequence[int], info: AttentionInfo) -> Tensor:
    """Boolean mask, broadcastable to ``weights``, that is True on the given heads."""
    axis = _head_axis(info)
    sel = torch.zeros(weights.shape[axis], dtype=torch.bool, device=weights.device)
    sel[list(heads)] = True
    shape = [1] * weights.dim()
    shape[axis] = -1
    return sel.view(shape)


@contextmanager
def attention_hook(layer: GraphAttention, hook) -> Iterator[None]:
    """Register ``hook`` on ``layer`` for the duration of the ``with`` block."""
    handle = layer.register_attention_hook(hook)
    try:
        yield
    finally:
        handle.remove()


@contextmanager
def capture_attention(model: nn.Module, detach: bool = True) -> Iterator[dict[str, list[Tensor]]]:
    """Collect the normalised weights of every attention layer of ``model``, one entry per call."""
    store: dict[str, list[Tensor]] = {}
    handles = []
    for name, layer in attention_layers(model).items():
        def hook(_layer, weights, _info, _name=name):
            store.setdefault(_name, []).append(weights.detach() if detach else weights)
        handles.append(layer.register_attention_hook(hook))
    try:
        yield store
    finally:
        for h in handles:
            h.remove()


def ablate_heads(layer: GraphAttention, heads: Sequence[int]):
    """Zero the weights of ``heads`` (those heads aggregate nothing)."""
    def hook(_layer, weights, info):
        return weights.masked_fill(_select(weights, heads, info), 0.0)
    return attention_hook(layer, hook)


def replace_heads(layer: GraphAttention, heads: Sequence[int],
                  source: Tensor | Callable[[Tensor, AttentionInfo], Tensor]):
    """Replace the weights of ``heads`` by ``source`` (a tensor shaped like the weights, or a function of
    the weights and info returning one), e.g. weights recorded on another input (activation patching)."""
    def hook(_layer, weights, info):
        new = source(weights, info) if callable(source) else source.to(weights)
        return torch.where(_select(weights, heads, info), new, weights)
    return attention_hook(layer, hook)


def interpolate_heads(layer: GraphAttention, heads: Sequence[int], target: Tensor | str, alpha: float):
    """``(1 - alpha) * weights + alpha * target`` on ``heads``; ``target="uniform"`` spreads each head's
    mass evenly over the same edges (``"identity"`` on the dense path: attend to oneself, as in SoftPAG)."""
    def hook(_layer, weights, info):
        if isinstance(target, str):
            if target == "uniform":
                support = (weights != 0).to(weights.dtype)
                if info.path == "sparse":
                    from .ops import segment_sum
                    count = segment_sum(support, info.edge_index[1], int(info.edge_index[1].max()) + 1)
                    tgt = support / count[info.edge_index[1]].clamp_min(1)
                else:
                    tgt = support / support.sum(-1, keepdim=True).clamp_min(1)
            elif target == "identity" and info.path == "dense":
                eye = torch.eye(weights.shape[-2], weights.shape[-1], dtype=weights.dtype, device=weights.device)
                tgt = eye.expand_as(weights)
            else:
                raise ValueError(f"unknown target {target!r} for the {info.path} path")
        else:
            tgt = target.to(weights)
        mixed = (1 - alpha) * weights + alpha * tgt
        return torch.where(_select(weights, heads, info), mixed, weights)
    return attention_hook(layer, hook)
