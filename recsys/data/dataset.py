"""The one in-memory form every recommender reads: ``RecDataset``.

Index spaces (all contiguous, starting at 0):

- users ``0..n_users-1``
- entities ``0..n_entities-1``; items are the first ``n_items`` entities, so item ``i`` is entity ``i``
  and the remaining KG entities are ``n_items..n_entities-1``
- KG relations ``0..n_relations-1`` (the interact relation and inverse relations are *not* counted;
  graph builders add them)
"""
from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

SPLITS = ("train", "valid", "test")


def _pairs(x: Any, width: int) -> np.ndarray:
    a = np.asarray(x if x is not None else np.zeros((0, width)), dtype=np.int64)
    if a.size == 0:
        return np.zeros((0, width), dtype=np.int64)
    return a.reshape(-1, width)


@dataclass
class RecDataset:
    """Interactions (split into train / valid / test) plus an item knowledge graph.

    Shapes:
        train, valid, test: ``(N, 2)`` int64 rows ``[user, item]``, deduplicated.
        kg: ``(T, 3)`` int64 rows ``[head_entity, relation, tail_entity]``.
        *_time, *_rating: ``(N,)`` float64 aligned with the rows of the matching split, when known.
        interactions: every kept interaction (all splits) in index space, time-ordered when the
            source has timestamps, with columns ``user, item`` (+ ``timestamp``, ``rating``).
    """

    name: str
    n_users: int
    n_items: int
    n_entities: int
    n_relations: int
    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    kg: np.ndarray
    user_tokens: np.ndarray | None = None
    item_tokens: np.ndarray | None = None
    entity_tokens: np.ndarray | None = None
    relation_names: list[str] | None = None
    train_time: np.ndarray | None = None
    valid_time: np.ndarray | None = None
    test_time: np.ndarray | None = None
    train_rating: np.ndarray | None = None
    valid_rating: np.ndarray | None = None
    test_rating: np.ndarray | None = None
    interactions: pd.DataFrame | None = None
    user_feat: pd.DataFrame | None = None  # one row per user index (from a .user file), when present
    item_feat: pd.DataFrame | None = None  # one row per item index (from a .item file), when present
    _csr_cache: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.train = _pairs(self.train, 2)
        self.valid = _pairs(self.valid, 2)
        self.test = _pairs(self.test, 2)
        self.kg = _pairs(self.kg, 3)
        self.n_users, self.n_items = int(self.n_users), int(self.n_items)
        self.n_entities, self.n_relations = int(self.n_entities), int(self.n_relations)
        self.validate()

    def validate(self) -> None:
        """Check index ranges; raises ``ValueError`` naming the offending array."""
        if self.n_entities < self.n_items:
            raise ValueError(f"{self.name}: n_entities ({self.n_entities}) must be >= n_items "
                             f"({self.n_items}); items are the first n_items entities")
        for split in SPLITS:
            a = getattr(self, split)
            for col, n, what in ((0, self.n_users, "user"), (1, self.n_items, "item")):
                if len(a) and (a[:, col].min() < 0 or a[:, col].max() >= n):
                    raise ValueError(f"{self.name}: {split} has {what} ids outside [0, {n}) "
                                     f"(got min {a[:, col].min()}, max {a[:, col].max()})")
            for extra in ("time", "rating"):
                v = getattr(self, f"{split}_{extra}")
                if v is not None and len(v) != len(a):
                    raise ValueError(f"{self.name}: {split}_{extra} has {len(v)} rows, "
                                     f"expected {len(a)} (one per {split} row)")
        if len(self.kg):
            ents = self.kg[:, [0, 2]]
            if ents.min() < 0 or ents.max() >= self.n_entities:
                raise ValueError(f"{self.name}: kg has entity ids outside [0, {self.n_entities})")
            if self.kg[:, 1].min() < 0 or self.kg[:, 1].max() >= self.n_relations:
                raise ValueError(f"{self.name}: kg has relation ids outside [0, {self.n_relations})")

    def csr(self, split: str = "train") -> sp.csr_matrix:
        """``(n_users, n_items)`` 0/1 matrix of one split (cached; do not modify in place)."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        if split not in self._csr_cache:
            a = getattr(self, split)
            m = sp.csr_matrix((np.ones(len(a), dtype=np.float32), (a[:, 0], a[:, 1])),
                              shape=(self.n_users, self.n_items))
            m.sum_duplicates()
            m.data[:] = 1.0
            self._csr_cache[split] = m
        return self._csr_cache[split]

    def filter_kg(self, use_kg: bool = True, min_degree: int = 0) -> "RecDataset":
        """A copy with a reduced knowledge graph (ablations); ids are unchanged, removed entities stay isolated.

        ``use_kg=False`` drops every triple. ``min_degree=k`` keeps a triple only if each of its non-item
        entities appears in at least ``k`` triples of this KG (items are always kept), as RecBole's
        ``entity_kg_num_interval`` lower bound does for entities.
        """
        if min_degree < 0:
            raise ValueError(f"kg_min_degree must be >= 0, got {min_degree}")
        kg = self.kg
        if not use_kg:
            kg = kg[:0]
        elif min_degree > 0 and len(kg):
            degree = np.bincount(np.concatenate([kg[:, 0], kg[:, 2]]), minlength=self.n_entities)
            ok = lambda e: (e < self.n_items) | (degree[e] >= min_degree)
            kg = kg[ok(kg[:, 0]) & ok(kg[:, 2])]
        return self if kg is self.kg else dataclasses.replace(self, kg=kg.copy())

    def stats(self) -> dict[str, Any]:
        n_inter = len(self.train) + len(self.valid) + len(self.test)
        return {
            "name": self.name, "n_users": self.n_users, "n_items": self.n_items,
            "n_entities": self.n_entities, "n_relations": self.n_relations,
            "n_train": len(self.train), "n_valid": len(self.valid), "n_test": len(self.test),
            "n_interactions": n_inter, "n_triples": len(self.kg),
            "density": n_inter / max(1, self.n_users * self.n_items),
            "avg_inter_per_user": n_inter / max(1, self.n_users),
        }

    def __repr__(self) -> str:
        s = self.stats()
        return (f"RecDataset({self.name!r}: {s['n_users']} users, {s['n_items']} items, "
                f"{s['n_entities']} entities, {s['n_relations']} relations, "
                f"train/valid/test {s['n_train']}/{s['n_valid']}/{s['n_test']}, "
                f"{s['n_triples']} triples)")

    # ------------------------------------------------------------------ raw ids (dataset tokens) <-> indices
    def _tokens(self, kind: str) -> np.ndarray:
        tokens = self.user_tokens if kind == "user" else self.item_tokens
        n = self.n_users if kind == "user" else self.n_items
        return np.arange(n).astype(str) if tokens is None else np.asarray(tokens).astype(str)

    def _index_of(self, kind: str, raw) -> np.ndarray:
        cache = self._csr_cache.setdefault(f"_{kind}_index", {})
        if not cache:
            cache.update({str(tok): i for i, tok in enumerate(self._tokens(kind))})
        raw = np.asarray(raw, dtype=object).reshape(-1)
        out = np.empty(len(raw), dtype=np.int64)
        for j, tok in enumerate(raw):
            key = str(tok)
            if key not in cache:
                near = difflib.get_close_matches(key, list(cache), n=3)
                hint = f"; did you mean {', '.join(map(repr, near))}?" if near else ""
                raise KeyError(f"unknown {kind} id {key!r} in dataset '{self.name}' ({len(cache)} {kind}s; ids are "
                               f"the dataset's raw ids, pass ids='internal' for 0-based indices){hint}")
            out[j] = cache[key]
        return out

    def user_index(self, raw) -> np.ndarray:
        """Internal indices of raw user ids (the dataset's own ids / RecBole tokens); ``KeyError`` names an unknown id."""
        return self._index_of("user", raw)

    def item_index(self, raw) -> np.ndarray:
        """Internal indices of raw item ids; ``KeyError`` names an unknown id."""
        return self._index_of("item", raw)

    def user_raw(self, index) -> np.ndarray:
        """Raw ids (str) of internal user indices."""
        return self._tokens("user")[np.asarray(index, dtype=np.int64)]

    def item_raw(self, index) -> np.ndarray:
        """Raw ids (str) of internal item indices; ``""`` for the padding index -1."""
        index = np.asarray(index, dtype=np.int64)
        names = self._tokens("item")[np.maximum(index, 0)]
        return np.where(index >= 0, names, "")

    def equals(self, other: "RecDataset") -> bool:
        """Exact equality of counts, splits, KG and names (used by round-trip tests)."""
        if (self.n_users, self.n_items, self.n_entities, self.n_relations) != (
                other.n_users, other.n_items, other.n_entities, other.n_relations):
            return False
        for k in ("train", "valid", "test", "kg"):
            if not np.array_equal(getattr(self, k), getattr(other, k)):
                return False
        for k in ("user_tokens", "item_tokens", "entity_tokens"):
            a, b = getattr(self, k), getattr(other, k)
            if (a is None) != (b is None) or (a is not None and not np.array_equal(a, b)):
                return False
        return list(self.relation_names or []) == list(other.relation_names or [])
