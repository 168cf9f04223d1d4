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

Activation patching works on any named submodule (an attention layer, its ``update``, an MLP, an
embedding): cache the outputs on a clean input, then replay them (all of an output or the part picked by
``where``) inside a run on a corrupted input::

    with cache_activations(model, ["blocks.0.attn"]) as clean:
        model(x_clean)
    with patch_activations(model, clean, where=(slice(None), -1)):
        y = model(x_corrupt)          # the last token of blocks.0.attn's output comes from the clean run
    effects = activation_patching(model, x_clean, x_corrupt, ["blocks.0.attn", "blocks.1.attn"], metric)
"""
from __future__ import annotations

import difflib
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch
from torch import Tensor, nn

from .attention.layer import AttentionInfo, GraphAttention

__all__ = ["attention_layers", "capture_attention", "ablate_heads", "replace_heads", "interpolate_heads",
           "attention_hook", "named_module", "cache_activations", "patch_activations", "activation_patching"]


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


# ----------------------------------------------------------------------------------- activation patching

def named_module(model: nn.Module, name: str) -> nn.Module:
    """The submodule called ``name`` (as in ``model.named_modules()``); an unknown name lists the closest."""
    modules = dict(model.named_modules())
    if name not in modules:
        close = difflib.get_close_matches(name, [n for n in modules if n], n=3, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise ValueError(f"{type(model).__name__} has no submodule '{name}'.{hint} "
                         f"Named submodules: {', '.join(n for n in modules if n) or 'none'}")
    return modules[name]


def _tensor_output(name: str, output: Any) -> Tensor:
    if not isinstance(output, Tensor):
        raise TypeError(f"module '{name}' returned a {type(output).__name__}; activation caching and patching "
                        "need a module whose output is one tensor (name a submodule that returns one)")
    return output


@contextmanager
def cache_activations(model: nn.Module, names: Sequence[str], detach: bool = True) -> Iterator[dict[str, list[Tensor]]]:
    """Record the outputs of the submodules ``names`` of ``model``: ``store[name]`` lists one tensor per call."""
    if isinstance(names, str):
        names = [names]
    store: dict[str, list[Tensor]] = {}
    handles = []
    for name in names:
        def hook(_module, _inputs, output, _name=name):
            out = _tensor_output(_name, output)
            store.setdefault(_name, []).append(out.detach() if detach else out)
        handles.append(named_module(model, name).register_forward_hook(hook))
    try:
        yield store
    finally:
        for h in handles:
            h.remove()


def _where_mask(where: Any, output: Tensor) -> Tensor:
    """Boolean mask shaped like ``output`` that is True on the entries ``where`` picks (an index or a mask)."""
    if isinstance(where, Tensor) and where.dtype == torch.bool:
        try:
            return where.to(output.device).expand_as(output)
        except RuntimeError:
            raise ValueError(f"boolean where of shape {tuple(where.shape)} does not broadcast to the output "
                             f"shape {tuple(output.shape)}") from None
    mask = torch.zeros(output.shape, dtype=torch.bool, device=output.device)
    try:
        mask[where] = True
    except (IndexError, TypeError) as err:
        raise ValueError(f"where={where!r} does not index an output of shape {tuple(output.shape)}: {err}") from None
    return mask


@contextmanager
def patch_activations(model: nn.Module, patches: Mapping[str, Any], where: Any = None) -> Iterator[None]:
    """Replace the outputs of named submodules during the ``with`` block.

    Args:
        model: any module (every model built from :class:`GraphAttention` qualifies).
        patches: name -> a tensor shaped like that module's output (used at every call), a list of tensors
            (call ``i`` gets item ``i``, as :func:`cache_activations` records them), or a function of the
            module's own output returning the replacement.
        where: ``None`` replaces the whole output; an index (``(slice(None), -1)``: the last token of a
            ``(B, N, D)`` output) or a boolean mask broadcastable to the output replaces only those entries
            and keeps the rest of the run's own output.
    """
    calls = {name: 0 for name in patches}
    handles = []
    for name, patch in patches.items():
        def hook(_module, _inputs, output, _name=name, _patch=patch):
            out = _tensor_output(_name, output)
            if callable(_patch):
                new = _patch(out)
            elif isinstance(_patch, Tensor):
                new = _patch
            else:
                if calls[_name] >= len(_patch):
                    raise ValueError(f"module '{_name}' was called {calls[_name] + 1} times but only "
                                     f"{len(_patch)} cached outputs were given")
                new = _patch[calls[_name]]
            calls[_name] += 1
            if not isinstance(new, Tensor) or new.shape != out.shape:
                got = tuple(new.shape) if isinstance(new, Tensor) else type(new).__name__
                raise ValueError(f"patch for module '{_name}' has shape {got}, its output has {tuple(out.shape)} "
                                 "(cache it on an input of the same shape)")
            new = new.to(out)
            return new if where is None else torch.where(_where_mask(where, out), new, out)
        handles.append(named_module(model, name).register_forward_hook(hook))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def activation_patching(model: nn.Module, clean: Any, corrupted: Any, names: Sequence[str],
                        metric: Callable[[Any], float], where: Any = None,
                        forward: Callable[[nn.Module, Any], Any] | None = None) -> dict[str, float]:
    """Patch each module of ``names`` in turn from the clean run into the corrupted run.

    Returns ``{"clean": metric(clean output), "corrupted": metric(corrupted output), name: metric(output of
    the corrupted run with that module's output patched), ...}``. ``forward(model, inputs)`` runs the model
    (default ``model(inputs)``); runs are made without gradients.
    """
    run = forward if forward is not None else (lambda m, x: m(x))
    with torch.no_grad():
        with cache_activations(model, names) as cache:
            clean_out = run(model, clean)
        silent = [n for n in names if n not in cache]
        if silent:
            raise ValueError(f"modules {silent} were not called by the clean run, so there is nothing to patch")
        result = {"clean": float(metric(clean_out)), "corrupted": float(metric(run(model, corrupted)))}
        for name in names:
            with patch_activations(model, {name: cache[name]}, where=where):
                result[name] = float(metric(run(model, corrupted)))
    return result
