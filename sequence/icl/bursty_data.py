"""Bursty Gaussian-mixture sequences for in-context classification (Reddy, "The mechanistic basis of data
dependence and abrupt learning in an in-context classification task", ICLR 2024,
https://arxiv.org/abs/2312.03002; layout of the author's ``datasets_v2.py``, re-implemented in torch).

``K`` class means ``mu_k ~ N(0, I_D / D)`` and ``L`` label vectors ``~ N(0, I_D / D)``; class ``k`` carries label
``k mod L``. An item of class ``k`` is ``(mu_k + eps * eta) / sqrt(1 + eps^2)``, ``eta ~ N(0, I_D / D)``.
A sequence is ``x_1, l_1, ..., x_N, l_N, x_q`` (2N + 1 tokens); the target is the query's label.

- bursty (probability ``p_B``): ``N / B`` classes drawn i.i.d. from the rank-frequency law
  ``p(k) ~ (k + 1)^-alpha``, each repeated ``B`` times, shuffled; the query's class is one of them.
- otherwise: all ``N`` context classes and the query's class i.i.d. from the same law (IWL only helps).
- novel (probability ``p_C``, always bursty): classes with fresh means (``novel_classes`` of them per batch;
  labels still from the same ``L`` vectors), so only in-context learning helps.
- ``no_repeats``: the context's ``N / B`` classes carry distinct labels.
- positions: a one-hot of length ``P = 2 * Nmax + 1`` is concatenated *before* each token's content; the
  ``2N + 1`` positions start at a random offset in ``[0, P - (2N + 1)]``. Token width ``P + D``.

Evaluation sets: ``ic`` (bursty, novel classes), ``ic2`` (bursty, known classes, context labels replaced by
``(label + 1) mod L`` and the target too: it can only be read from the context), ``iw`` (non-bursty, known
classes).

Shapes: ``tokens`` (S, 2N + 1, P + D), ``target`` (S,) label ids, ``context_labels`` (S, N) label ids,
``classes`` (S, N + 1) class ids (novel classes numbered from K), ``novel`` (S,) bool.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from graphattn.registry import register_dataset

__all__ = ["BurstyConfig", "BurstyData", "zipf_probs", "sample_bursty", "load_icl_bursty"]


def zipf_probs(num_classes: int, alpha: float) -> Tensor:
    """Rank-frequency law ``p(k) ~ (k + 1)^-alpha`` over ``k = 0..K-1`` (alpha = 0: uniform)."""
    if num_classes < 1:
        raise ValueError(f"number of classes must be >= 1, got {num_classes}")
    p = torch.arange(1, num_classes + 1, dtype=torch.float64).pow(-float(alpha))
    return (p / p.sum()).float()


@dataclass(frozen=True)
class BurstyConfig:
    """Generator settings (defaults: the paper's L = 32, N = 8, D = 63, eps = 0.1, alpha = 0, Nmax = 32)."""

    num_classes: int = 512         # K
    num_labels: int = 32           # L
    num_pairs: int = 8             # N
    dim: int = 63                  # D (item width)
    eps: float = 0.1
    alpha: float = 0.0
    burstiness: int = 1            # B; 0 = non-bursty
    p_bursty: float = 1.0          # p_B
    p_novel: float = 0.0           # p_C
    max_pairs: int = 32            # Nmax; positions P = 2 Nmax + 1
    no_repeats: bool = False
    novel_classes: int = 128       # fresh classes drawn per batch for novel sequences

    def __post_init__(self) -> None:
        K, L, N, B = self.num_classes, self.num_labels, self.num_pairs, self.burstiness
        if L < 1 or K < L or K % L:
            raise ValueError(f"num_classes K={K} must be a positive multiple of num_labels L={L} (class k has label k mod L)")
        if self.novel_classes < L or self.novel_classes % L:
            raise ValueError(f"novel_classes={self.novel_classes} must be a positive multiple of num_labels L={L}")
        if N < 1 or self.max_pairs < N:
            raise ValueError(f"need 1 <= num_pairs N={N} <= max_pairs Nmax={self.max_pairs}")
        if B < 0 or (B > 0 and (N % B or B > N)):
            raise ValueError(f"burstiness B={B} must be 0 (non-bursty) or divide num_pairs N={N}")
        for name in ("p_bursty", "p_novel"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {getattr(self, name)}")
        if self.no_repeats and B > 0 and N // B > L:
            raise ValueError(f"no_repeats needs N/B={N // B} distinct labels but there are only L={L}")
        if self.dim < 1 or self.eps < 0:
            raise ValueError(f"dim must be >= 1 and eps >= 0, got dim={self.dim}, eps={self.eps}")

    @property
    def positions(self) -> int:
        return 2 * self.max_pairs + 1

    @property
    def width(self) -> int:
        return self.positions + self.dim

    @property
    def seq_len(self) -> int:
        return 2 * self.num_pairs + 1


@dataclass
class BurstyData:
    """The fixed class means and label vectors, the generator settings and the evaluation sets."""

    config: BurstyConfig
    means: Tensor                    # (K, D)
    label_vectors: Tensor            # (L, D)
    eval_sets: dict[str, dict[str, dict[str, Tensor]]] = field(default_factory=dict)

    kind = "classification"

    def sample(self, batch: int, generator: torch.Generator, **overrides: Any) -> dict[str, Tensor]:
        cfg = self.config if not overrides else BurstyConfig(**{**self.config.__dict__, **overrides})
        return sample_bursty(cfg, self.means, self.label_vectors, batch, generator)

    def __str__(self) -> str:
        c = self.config
        return (f"icl-bursty: K={c.num_classes}, L={c.num_labels}, N={c.num_pairs}, D={c.dim}, eps={c.eps}, "
                f"alpha={c.alpha}, B={c.burstiness}, p_B={c.p_bursty}, p_C={c.p_novel}, width {c.width}")


def _choose_classes(cfg: BurstyConfig, batch: int, num: int, K: int, probs: Tensor, g: torch.Generator) -> Tensor:
    """(batch, num) class ids: i.i.d. from ``probs``, or with distinct labels when ``no_repeats``."""
    if cfg.no_repeats:
        L = cfg.num_labels
        labels = torch.rand(batch, L, generator=g).argsort(-1)[:, :num]        # distinct labels
        block = torch.randint(0, K // L, (batch, num), generator=g)
        return block * L + labels
    return torch.multinomial(probs.expand(batch, -1), num, replacement=True, generator=g)


def _bursty_choices(cfg: BurstyConfig, batch: int, K: int, probs: Tensor, g: torch.Generator) -> tuple[Tensor, Tensor]:
    """Context classes (batch, N): ``N / B`` classes repeated B times and shuffled; the query class is one of them."""
    N, B = cfg.num_pairs, max(cfg.burstiness, 1)
    base = _choose_classes(cfg, batch, N // B, K, probs, g).repeat(1, B)        # (batch, N)
    perm = torch.rand(batch, N, generator=g).argsort(-1)
    choices = base.gather(1, perm)
    pick = torch.randint(0, N, (batch,), generator=g)
    return choices, choices.gather(1, pick[:, None]).squeeze(1)


def _items(means: Tensor, classes: Tensor, eps: float, g: torch.Generator) -> Tensor:
    D = means.shape[-1]
    noise = torch.randn(*classes.shape, D, generator=g) / D ** 0.5
    return (means[classes] + eps * noise) / (1 + eps ** 2) ** 0.5


def sample_bursty(cfg: BurstyConfig, means: Tensor, label_vectors: Tensor, batch: int,
                  generator: torch.Generator, flip_labels: bool = False) -> dict[str, Tensor]:
    """``batch`` sequences (see the module docstring). ``flip_labels`` replaces every known-class label,
    in the context and the target, by ``(label + 1) mod L`` (the IC2 set)."""
    g, K, L, N = generator, cfg.num_classes, cfg.num_labels, cfg.num_pairs
    if means.shape != (K, cfg.dim) or label_vectors.shape != (L, cfg.dim):
        raise ValueError(f"means {tuple(means.shape)} / label_vectors {tuple(label_vectors.shape)} do not match "
                         f"K={K}, L={L}, D={cfg.dim}")
    probs = zipf_probs(K, cfg.alpha)
    if cfg.burstiness > 0:
        choices, target_cls = _bursty_choices(cfg, batch, K, probs, g)
        iid = torch.rand(batch, generator=g) >= cfg.p_bursty                 # non-bursty rows
    else:
        choices = target_cls = None
        iid = torch.ones(batch, dtype=torch.bool)
    iid_choices = torch.multinomial(probs.expand(batch, -1), N + 1, replacement=True, generator=g)
    if choices is None:
        choices, target_cls = iid_choices[:, :N], iid_choices[:, N]
    else:
        choices = torch.where(iid[:, None], iid_choices[:, :N], choices)
        target_cls = torch.where(iid, iid_choices[:, N], target_cls)
    classes = torch.cat([choices, target_cls[:, None]], 1)                     # (batch, N + 1)
    content_items = _items(means, classes, cfg.eps, g)                         # (batch, N + 1, D)
    label_ids = classes % L
    if flip_labels:
        label_ids = (label_ids + 1) % L

    novel = torch.rand(batch, generator=g) < cfg.p_novel
    if bool(novel.any()):
        Kc = cfg.novel_classes
        new_means = torch.randn(Kc, cfg.dim, generator=g) / cfg.dim ** 0.5
        sub = BurstyConfig(**{**cfg.__dict__, "num_classes": Kc, "alpha": 0.0, "burstiness": max(cfg.burstiness, 1)})
        n_choices, n_target = _bursty_choices(sub, batch, Kc, zipf_probs(Kc, 0.0), g)
        n_classes = torch.cat([n_choices, n_target[:, None]], 1)
        content_items = torch.where(novel[:, None, None], _items(new_means, n_classes, cfg.eps, g), content_items)
        label_ids = torch.where(novel[:, None], n_classes % L, label_ids)
        classes = torch.where(novel[:, None], K + n_classes, classes)          # novel ids follow the known ones

    S, T, P = batch, cfg.seq_len, cfg.positions
    content = torch.empty(S, T, cfg.dim)
    content[:, 0:-1:2] = content_items[:, :N]
    content[:, 1:-1:2] = label_vectors[label_ids[:, :N]]
    content[:, -1] = content_items[:, N]
    shift = torch.randint(0, P - T + 1, (S,), generator=g)
    pos = torch.zeros(S, T, P)
    pos[torch.arange(S)[:, None], torch.arange(T)[None, :], shift[:, None] + torch.arange(T)[None, :]] = 1.0
    return {"tokens": torch.cat([pos, content], -1), "target": label_ids[:, N],
            "context_labels": label_ids[:, :N], "classes": classes, "novel": novel}


def load_icl_bursty(config: Mapping[str, Any]) -> BurstyData:
    """The class means and label vectors (seeded by ``data_seed``) and the IC / IC2 / IW evaluation sets."""
    cfg = BurstyConfig(num_classes=int(config["icl_classes"]), num_labels=int(config["icl_labels"]),
                       num_pairs=int(config["icl_pairs"]), dim=int(config["icl_item_dim"]),
                       eps=float(config["icl_eps"]), alpha=float(config["icl_alpha"]),
                       burstiness=int(config["icl_burstiness"]), p_bursty=float(config["icl_p_bursty"]),
                       p_novel=float(config["icl_p_novel"]), max_pairs=int(config["icl_max_pairs"]),
                       no_repeats=bool(config["icl_no_repeats"]))
    g = torch.Generator().manual_seed(int(config["data_seed"]))
    means = torch.randn(cfg.num_classes, cfg.dim, generator=g) / cfg.dim ** 0.5
    labels = torch.randn(cfg.num_labels, cfg.dim, generator=g) / cfg.dim ** 0.5
    data = BurstyData(cfg, means, labels)
    bursty = max(cfg.burstiness, 1)
    sets = {
        "ic": dict(burstiness=bursty, p_bursty=1.0, p_novel=1.0),
        "ic2": dict(burstiness=bursty, p_bursty=1.0, p_novel=0.0),
        "iw": dict(burstiness=0, p_bursty=0.0, p_novel=0.0),
    }
    for split, size in (("valid", int(config["icl_valid_size"])), ("test", int(config["icl_test_size"]))):
        data.eval_sets[split] = {
            name: sample_bursty(BurstyConfig(**{**cfg.__dict__, **over}), means, labels, size, g,
                                flip_labels=(name == "ic2"))
            for name, over in sets.items()}
    return data


register_dataset("icl-bursty", task="icl", loader=load_icl_bursty,
                 description="bursty Gaussian-mixture item-label sequences (Reddy 2024), IC / IC2 / IW evaluation sets")
