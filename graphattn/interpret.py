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

__all__ = ["attention_layers", "capture_attention", "capture_scores", "ablate_heads", "replace_heads", "interpolate_heads",
           "attention_hook", "named_module", "cache_activations", "patch_activations", "activation_patching",
           "head_outputs", "path_patching"]


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
def _capture(model: nn.Module, register: str, record) -> Iterator[dict[str, list[Tensor]]]:
    """Hook every attention layer of ``model`` with ``layer.<register>``; ``record(values, info)`` is stored per call."""
    store: dict[str, list[Tensor]] = {}
    handles = []
    for name, layer in attention_layers(model).items():
        def hook(_layer, values, info, _name=name):
            store.setdefault(_name, []).append(record(values, info))
        handles.append(getattr(layer, register)(hook))
    try:
        yield store
    finally:
        for h in handles:
            h.remove()


def capture_attention(model: nn.Module, detach: bool = True):
    """Collect the normalised weights of every attention layer of ``model``, one entry per call (a context manager
    yielding ``{layer name: [weights, ...]}``)."""
    return _capture(model, "register_attention_hook", lambda w, _info: w.detach() if detach else w)


def _existing_edges(scores: Tensor, info) -> Tensor:
    s = scores.detach()
    if info.mask is not None:
        s = s.masked_select(info.mask.expand_as(s))
    return s.flatten()


def capture_scores(model: nn.Module):
    """Collect the raw scores (pre-normaliser logits) of every attention layer, restricted to the edges that exist
    (the mask's True entries): one 1-D tensor per call (a context manager yielding ``{layer name: [scores, ...]}``)."""
    return _capture(model, "register_score_hook", _existing_edges)


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


# ---------------------------------------------------------------------------------------- path patching
#
# A head's output "z" is its weighted message sum before the output projection: the ``agg`` an attention
# layer hands its ``update`` (``(..., N, H * Dv)``, heads concatenated). Its inputs are the q / k of the
# score's ``project`` and the v of the message's ``project`` (``(..., N, H, D)``). Both are reached without
# touching model code: a forward pre-hook on ``layer.update`` and a wrapper around ``project`` for the
# duration of a ``with`` block. Positions index the token axis (dim -2 of z, dim -3 of q / k / v).

COMPONENTS = ("q", "k", "v")


def _z_heads(layer: GraphAttention, agg: Tensor) -> Tensor:
    return agg.unflatten(-1, (layer.message.heads, -1))                       # (..., N, H, Dv)


@contextmanager
def _on_z(layers: Mapping[str, GraphAttention], fn: Callable[[str, Tensor], Tensor | None]) -> Iterator[None]:
    """Call ``fn(name, z)`` (z ``(..., N, H, Dv)``) on each layer's head outputs; a returned tensor replaces z."""
    handles = []
    for name, layer in layers.items():
        def pre(_module, args, _name=name, _layer=layer):
            x, agg = args[0], args[1]
            new = fn(_name, _z_heads(_layer, agg))
            return None if new is None else (x, new.flatten(-2), *args[2:])
        handles.append(layer.update.register_forward_pre_hook(pre))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@contextmanager
def _on_project(layer: GraphAttention, component: str, fn: Callable[[Tensor], Tensor | None]) -> Iterator[None]:
    """Call ``fn(t)`` on the layer's q, k or v (``(..., N, H, D)``) each call; a returned tensor replaces it."""
    owner = layer.message if component == "v" else layer.score
    original = owner.project

    def wrapped(*args, **kwargs):
        out = original(*args, **kwargs)
        if component == "v":
            new = fn(out)
            return out if new is None else new
        q, k = out
        new = fn(q if component == "q" else k)
        if new is None:
            return out
        return (new, k) if component == "q" else (q, new)

    shadowed = owner.__dict__.get("project")  # an outer wrapper of the same layer (nested receivers)
    owner.project = wrapped                   # an instance attribute shadows the method until removed
    try:
        yield
    finally:
        if shadowed is None:
            del owner.project
        else:
            owner.project = shadowed


@contextmanager
def head_outputs(model: nn.Module, position: Any = None) -> Iterator[dict[str, Tensor]]:
    """Record every attention layer's per-head outputs z: ``store[name]`` is ``(..., N, H, Dv)`` (or the
    token(s) ``position`` picks, ``(..., H, Dv)`` for one index), from the last call inside the block."""
    store: dict[str, Tensor] = {}

    def record(name, z):
        store[name] = (z if position is None else z[..., position, :, :]).detach().clone()
    with _on_z(attention_layers(model), record):
        yield store


def _parse_receivers(receivers, layers: Mapping[str, GraphAttention], model: nn.Module):
    if isinstance(receivers, (str, tuple)):
        receivers = [receivers]
    if not receivers:
        raise ValueError("path_patching needs at least one receiver")
    parsed = []
    for r in receivers:
        if isinstance(r, str):
            named_module(model, r)
            parsed.append(r)
            continue
        if not (isinstance(r, tuple) and len(r) == 3):
            raise ValueError(f"receiver {r!r}: expected a module name or (layer_name, head, 'q'|'k'|'v')")
        name, head, comp = r
        if name not in layers:
            raise ValueError(f"receiver {r!r}: '{name}' is not an attention layer; attention layers: {', '.join(layers)}")
        if comp not in COMPONENTS:
            raise ValueError(f"receiver {r!r}: component must be one of {COMPONENTS}, got {comp!r}")
        if not 0 <= int(head) < layers[name].heads:
            raise ValueError(f"receiver {r!r}: layer '{name}' has heads 0..{layers[name].heads - 1}")
        parsed.append((name, int(head), comp))
    return parsed


def path_patching(model: nn.Module, clean: Any, corrupted: Any, receivers: Any,
                  metric: Callable[[Any], Any], senders: Sequence[tuple[str, int]] | None = None,
                  position: int = -1, freeze: Sequence[str] = (),
                  forward: Callable[[nn.Module, Any], Any] | None = None) -> dict[tuple[str, int], float]:
    """Path patching (Wang et al. 2022; Merullo et al. 2024's ``path_patching``): how much of the clean ->
    corrupted change of ``metric`` flows from each sender head to the receivers *directly*.

    For each sender head ``(layer, h)``:

    1. run the clean input with the sender's z at ``position`` set to its value on the corrupted input and
       every other head's z at ``position`` frozen to its clean value (and the modules ``freeze``, e.g.
       the MLPs, frozen to their clean output at ``position``), and record the receivers there;
    2. run the clean input again patching only the receivers at ``position`` with the recorded values;
    3. score ``(metric(patched) - metric(clean)) / (metric(corrupted) - metric(clean))``: 1 when the whole
       change flows along sender -> receivers, 0 when none does (Merullo et al. store -100 x this).

    Args:
        model: any module built from :class:`GraphAttention` (each attention layer called once per forward).
        clean, corrupted: the two inputs (``forward(model, x)`` runs one, default ``model(x)``).
        receivers: a module name (its output at ``position`` is the receiver, e.g. the final norm: the
            "logits" stage), a head input ``(layer_name, head, "q" | "k" | "v")``, or a list of them.
        metric: model output -> scalar (e.g. the mean logit difference of the right and wrong answers).
        senders: heads ``(layer_name, h)`` to score; default every head of every attention layer up to the
            lowest receiver head's layer (all layers for module receivers).
        position: the token whose z (and receivers) are patched; the spec's and the paper's final token.
        freeze: further module names (MLPs) held at their clean output at ``position`` in step 1.

    Returns:
        ``{(layer_name, h): score}`` in sender order.
    """
    run = forward if forward is not None else (lambda m, x: m(x))
    layers = attention_layers(model)
    if not layers:
        raise ValueError(f"{type(model).__name__} has no GraphAttention layer to path-patch")
    order = {name: i for i, name in enumerate(layers)}
    parsed = _parse_receivers(receivers, layers, model)
    head_layers = [order[r[0]] for r in parsed if isinstance(r, tuple)]
    top = min(head_layers) if head_layers else len(layers) - 1
    if senders is None:
        senders = [(name, h) for name, layer in layers.items() if order[name] <= top for h in range(layer.heads)]
    for name, h in senders:
        if name not in layers or not 0 <= h < layers[name].heads:
            raise ValueError(f"sender {(name, h)!r} is not a head of an attention layer ({', '.join(layers)})")
    freeze = list(freeze)
    for name in freeze:
        named_module(model, name)

    with torch.no_grad():
        with head_outputs(model, position) as z_clean, cache_activations(model, freeze) as frozen:
            out = run(model, clean)
        m_clean = float(metric(out))
        with head_outputs(model, position) as z_corrupt:
            m_corrupt = float(metric(run(model, corrupted)))
        missing = [n for n in layers if n not in z_clean or n not in z_corrupt]
        if missing:
            raise ValueError(f"attention layers {missing} were not called by the model's forward")
        gap = m_corrupt - m_clean
        if abs(gap) < 1e-12:
            raise ValueError(f"metric is {m_clean:.6g} on both the clean and the corrupted input: nothing to "
                             "attribute (choose inputs whose metric differs)")
        at_position = (Ellipsis, position, slice(None))                         # token axis of (..., N, D)
        scores: dict[tuple[str, int], float] = {}
        for s_name, s_head in senders:
            def set_z(name, z, _s=s_name, _h=s_head):
                new = z.clone()
                new[..., position, :, :] = z_clean[name]
                if name == _s:
                    new[..., position, _h, :] = z_corrupt[name][..., _h, :]
                return new
            recorded = _record_receivers(model, layers, parsed, position, run, clean,
                                         [_on_z(layers, set_z)]
                                         + [_patch_at(model, n, frozen[n][-1], at_position) for n in freeze])
            with _replay_receivers(model, layers, parsed, position, recorded):
                scores[(s_name, s_head)] = (float(metric(run(model, clean))) - m_clean) / gap
    return scores


def _patch_at(model, name, value, where):
    return patch_activations(model, {name: lambda out: _put(out, value, where)})


def _put(out: Tensor, value: Tensor, where) -> Tensor:
    new = out.clone()
    new[where] = value[where]
    return new


def _record_receivers(model, layers, parsed, position, run, inputs, contexts) -> dict:
    from contextlib import ExitStack
    recorded: dict = {}
    with ExitStack() as stack:
        for ctx in contexts:
            stack.enter_context(ctx)
        for r in parsed:
            if isinstance(r, str):
                cache = stack.enter_context(cache_activations(model, [r]))
                recorded[r] = cache
            else:
                name, head, comp = r

                def grab(t, _r=r, _head=head):
                    recorded[_r] = t[..., position, _head, :].detach().clone()
                stack.enter_context(_on_project(layers[name], comp, grab))
        run(model, inputs)
    for r in parsed:
        if isinstance(r, str):
            recorded[r] = recorded[r][r][-1][..., position, :]
    return recorded


@contextmanager
def _replay_receivers(model, layers, parsed, position, recorded) -> Iterator[None]:
    from contextlib import ExitStack
    with ExitStack() as stack:
        for r in parsed:
            if isinstance(r, str):
                def put(out, _v=recorded[r]):
                    new = out.clone()
                    new[..., position, :] = _v
                    return new
                stack.enter_context(patch_activations(model, {r: put}))
            else:
                name, head, comp = r

                def put_head(t, _v=recorded[r], _head=head):
                    new = t.clone()
                    new[..., position, _head, :] = _v
                    return new
                stack.enter_context(_on_project(layers[name], comp, put_head))
        yield
