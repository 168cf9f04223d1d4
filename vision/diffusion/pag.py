"""HeadHunter and SoftPAG: perturbed-attention guidance chosen per (layer, head).

Ahn et al., "Fine-Grained Perturbation Guidance via Attention Head Selection" (https://arxiv.org/abs/2506.10978),
on top of Ahn et al.'s Perturbed-Attention Guidance (PAG, https://arxiv.org/abs/2403.17377).

**SoftPAG** replaces the attention map of each selected head by a convex combination with the identity
graph (each token keeps a self-loop of weight u, every other edge is scaled by 1 - u; rows stay stochastic):

    A_{l,h} := (1 - u) A_{l,h} + u I        =>   O_{l,h} = (1 - u) A_{l,h} V_{l,h} + u V_{l,h}

u = 0 is the unperturbed model, u = 1 is PAG (the head outputs its own values). The perturbed prediction
``eps_p`` enters sampling as ``eps + w (eps - eps_p)`` (:class:`vision.diffusion.guidance.GuidedEps`).

Two implementations of the same function (tests prove them equal): ``impl="weights"`` mixes the normalised
weights through the core's attention hooks (:func:`graphattn.interpret.replace_heads`, the map is formed);
``impl="fast"`` keeps the layer's fused SDPA path and mixes the aggregated head outputs with the values
(a forward pre-hook on the layer's update, so only for self-attention, where senders are the receivers).
Either acts only on the batch rows it is told to (the perturbed branch of a batched guidance call).

**HeadHunter** (:func:`head_hunter`) grows a set S of (layer, head) pairs greedily: each round scores every
remaining candidate by the objective of images generated with S + {candidate} perturbed and adds the top k;
it stops after ``rounds`` rounds or when the best set stops improving.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Iterator

import torch
from torch import Tensor, nn

from graphattn.attention import GraphAttention
from graphattn.interpret import replace_heads

__all__ = ["Head", "SoftPAG", "head_hunter", "HuntResult", "all_heads"]

Head = tuple[int, int]   # (layer index in model.attention_layers(), head index)
IMPLS = ("weights", "fast")


def _layers_of(model: nn.Module | Sequence[GraphAttention]) -> list[GraphAttention]:
    if isinstance(model, nn.Module):
        if hasattr(model, "attention_layers"):
            return list(model.attention_layers())
        return [m for m in model.modules() if isinstance(m, GraphAttention)]
    return list(model)


def all_heads(model: nn.Module | Sequence[GraphAttention]) -> list[Head]:
    """Every (layer, head) pair of the model, layer-major."""
    return [(l, h) for l, layer in enumerate(_layers_of(model)) for h in range(layer.heads)]


class SoftPAG:
    """A set of perturbed heads with strengths; ``apply(rows)`` perturbs the model while open.

    Args:
        model: a model with ``attention_layers()`` (e.g. :class:`vision.diffusion.dit.DiT`), any module holding
            :class:`GraphAttention` layers (forward order), or a list of layers.
        heads: ``{(layer, head): u}``, or an iterable of ``(layer, head)`` pairs sharing ``u``.
        u: strength in [0, 1] for the pairs given without one (1 = PAG).
        impl: ``"weights"`` (hooks on the attention map) or ``"fast"`` (mix head outputs with values).
    """

    def __init__(self, model: nn.Module | Sequence[GraphAttention], heads: Mapping[Head, float] | Iterable[Head],
                 u: float = 1.0, impl: str = "weights") -> None:
        if impl not in IMPLS:
            raise ValueError(f"impl: unknown {impl!r}; expected one of {', '.join(IMPLS)}")
        self.layers, self.impl = _layers_of(model), impl
        pairs = dict(heads) if isinstance(heads, Mapping) else {tuple(p): u for p in heads}
        self.strength: dict[int, Tensor] = {}
        for pair, value in pairs.items():
            if len(pair) != 2:
                raise ValueError(f"a head is a (layer, head) pair, got {pair!r}")
            l, h = (int(v) for v in pair)
            if not 0 <= l < len(self.layers):
                raise ValueError(f"unknown layer {l} in head {pair}: the model has {len(self.layers)} attention layers (0..{len(self.layers) - 1})")
            if not 0 <= h < self.layers[l].heads:
                raise ValueError(f"unknown head {h} in head {pair}: layer {l} has {self.layers[l].heads} heads (0..{self.layers[l].heads - 1})")
            value = float(value)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"u must lie in [0, 1] (0 = unperturbed, 1 = PAG), got {value} for head {pair}")
            self.strength.setdefault(l, torch.zeros(self.layers[l].heads))[h] = value
        self.heads = {(l, h): float(u_l[h]) for l, u_l in self.strength.items() for h in range(len(u_l)) if u_l[h] > 0}

    def __repr__(self) -> str:
        return f"SoftPAG({sorted(self.heads.items())}, impl={self.impl!r})"

    @staticmethod
    def _rows(full: Tensor, mixed: Tensor, rows: slice | None) -> Tensor:
        if rows is None:
            return mixed
        out = full.clone()
        out[rows] = mixed[rows]
        return out

    def _weights_hook(self, layer: GraphAttention, u: Tensor, rows: slice | None):
        def source(weights: Tensor, info) -> Tensor:                        # weights (B, H, N, N)
            if info.path != "dense":
                raise ValueError("SoftPAG's identity target needs the dense path (tokens attend to tokens)")
            n = weights.shape[-1]
            if weights.shape[-2] != n:
                raise ValueError(f"SoftPAG needs self-attention (square maps), got {tuple(weights.shape)}")
            uu = u.to(weights).view(1, -1, 1, 1)
            eye = torch.eye(n, dtype=weights.dtype, device=weights.device)
            return self._rows(weights, (1 - uu) * weights + uu * eye, rows)
        heads = [int(h) for h in torch.nonzero(u > 0).flatten()]
        return replace_heads(layer, heads, source)

    @contextmanager
    def _fast_hook(self, layer: GraphAttention, u: Tensor, rows: slice | None) -> Iterator[None]:
        def pre_hook(_module, args):
            x_dst, agg = args                                                # (B, N, D), (B, N, H * Dv)
            v = layer.message.project(x_dst)                                # (B, N, H, Dv)
            a = agg.unflatten(-1, (v.shape[-2], v.shape[-1]))
            uu = u.to(agg).view(1, 1, -1, 1)
            mixed = ((1 - uu) * a + uu * v).flatten(-2)
            return (x_dst, self._rows(agg, mixed, rows))
        handle = layer.update.register_forward_pre_hook(pre_hook)
        try:
            yield
        finally:
            handle.remove()

    @contextmanager
    def apply(self, rows: slice | None = None) -> Iterator[None]:
        """Perturb the selected heads (for batch ``rows`` only, when given) while the context is open."""
        with ExitStack() as stack:
            for l, u in self.strength.items():
                if bool((u > 0).any()):
                    make = self._weights_hook if self.impl == "weights" else self._fast_hook
                    stack.enter_context(make(self.layers[l], u, rows))
            yield


@dataclass
class HuntResult:
    """What :func:`head_hunter` found: the selected heads in the order added, the objective of the empty set
    and of each accepted set, and every candidate's score per round (``rounds[r][(l, h)]``)."""

    selected: list[Head]
    base_score: float
    set_scores: list[float] = field(default_factory=list)
    rounds: list[dict[Head, float]] = field(default_factory=list)
    evaluations: int = 0


def head_hunter(objective: Callable[[list[Head]], float], candidates: Sequence[Head], rounds: int = 4,
                k: int = 2, stop_when_worse: bool = True) -> HuntResult:
    """Greedy HeadHunter search maximising ``objective(heads)`` (the mean score of images generated with
    ``heads`` perturbed; ``objective([])`` is the baseline). Objective values are cached per head set."""
    if rounds < 1 or k < 1:
        raise ValueError(f"rounds and k must be >= 1, got rounds={rounds}, k={k}")
    if not candidates:
        raise ValueError("head_hunter: no candidate heads")
    cache: dict[frozenset, float] = {}

    def score(heads: list[Head]) -> float:
        key = frozenset(heads)
        if key not in cache:
            cache[key] = float(objective(sorted(key)))
        return cache[key]

    result = HuntResult(selected=[], base_score=score([]))
    current = result.base_score
    for _ in range(rounds):
        remaining = [c for c in candidates if c not in result.selected]
        if not remaining:
            break
        scores = {c: score(result.selected + [c]) for c in remaining}
        result.rounds.append(scores)
        top = sorted(remaining, key=lambda c: scores[c], reverse=True)[:k]
        new = score(result.selected + top)
        if stop_when_worse and new <= current:
            break
        result.selected += top
        result.set_scores.append(new)
        current = new
    result.evaluations = len(cache)
    return result
