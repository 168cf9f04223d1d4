"""Vectorised training samplers for recommendation: BPR triples and TransR triples with corrupted tails.

Both follow the official KGAT code (``Model/utility/loader_kgat.py``): a CF batch holds distinct users, each
with one observed and one unobserved item drawn uniformly; a KG batch holds distinct heads, each with one of
its triples ``(h, r, t)`` and one corrupted tail ``t'`` drawn uniformly from every node and rejected only if
``(h, r, t')`` is a true triple.

With several processes (:meth:`shard`) every rank draws the same global batch from the same generator and keeps
its contiguous share: the ranks' shares together are exactly the batch a single process draws with that seed, so
a data-parallel run sees the batches of the one-process run (and a checkpoint's generator state serves any number
of processes).

``BPRSampler(..., mode="interaction")`` is RecBole's training protocol instead (``TrainDataLoader`` with uniform
negative sampling): every epoch visits each training interaction once, in a fresh random order, cut into batches of
``batch_size`` consecutive interactions (the last one shorter), each with one negative drawn uniformly from the
items the user has not interacted with in training. The default ``mode="user"`` is the official KGAT sampler.
"""
from __future__ import annotations

import warnings

import numpy as np

from graphattn.training.runtime import generator_state, set_generator_state


class _PairSet:
    """Membership test for integer pairs through sorted 64-bit keys (no Python sets over millions of pairs)."""

    DENSE_MAX = 1 << 24   # key ranges up to this size also get a boolean table: O(1) look-ups (16 MB at most)

    def __init__(self, a: np.ndarray, b: np.ndarray, b_size: int):
        self.b_size = int(b_size)
        self.keys = np.unique(a.astype(np.int64) * self.b_size + b.astype(np.int64))
        self.dense = None
        n_keys = int(self.keys[-1]) + 1 if len(self.keys) else 0
        if 0 < n_keys <= self.DENSE_MAX:   # the same answers as the sorted keys, without a binary search
            self.dense = np.zeros(n_keys, dtype=bool)
            self.dense[self.keys] = True

    def contains(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        q = a.astype(np.int64) * self.b_size + b.astype(np.int64)
        if self.dense is not None:
            inside = (q >= 0) & (q < len(self.dense))
            return np.where(inside, self.dense[np.where(inside, q, 0)], False)
        pos = np.searchsorted(self.keys, q)
        pos = np.minimum(pos, len(self.keys) - 1)
        return self.keys[pos] == q if len(self.keys) else np.zeros(len(q), dtype=bool)


def _rejection(draw, reject, size: int, rng: np.random.Generator, max_rounds: int = 100) -> np.ndarray:
    out = draw(size)
    bad = reject(np.arange(size), out)
    for _ in range(max_rounds):
        if not bad.any():
            return out
        idx = np.flatnonzero(bad)
        out[idx] = draw(len(idx))
        bad[idx] = reject(idx, out[idx])
    raise RuntimeError("negative sampling did not converge: some rows have no valid negative "
                       "(a user who interacted with every item, or a head linked to every node by one relation)")


class _Sharded:
    """Draws whole global batches and yields this rank's contiguous share of each (:meth:`shard`)."""

    batch_size: int
    rank, world_size = 0, 1

    def shard(self, rank: int, world_size: int) -> int:
        """Yield only share ``rank`` of ``world_size`` equal shares of every batch; returns the global batch size.

        The global batch size is rounded down to a multiple of ``world_size``, so that the ranks' mean losses
        average (as DistributedDataParallel averages gradients) to the mean over the whole batch.
        """
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
        if self.batch_size < world_size:
            raise ValueError(f"batch size {self.batch_size} is smaller than the {world_size} processes")
        self.rank, self.world_size = rank, world_size
        if self.batch_size % world_size:
            warnings.warn(f"{type(self).__name__}: batch size {self.batch_size} rounded down to "
                          f"{self.batch_size - self.batch_size % world_size}, a multiple of the {world_size} processes")
            self.batch_size -= self.batch_size % world_size
        return self.batch_size

    def sample(self) -> tuple[np.ndarray, ...]:
        raise NotImplementedError

    def next_batch(self) -> tuple[np.ndarray, ...]:
        """This rank's share of the next global batch (the whole batch in a single process)."""
        batch = self.sample()
        if self.world_size == 1:
            return batch
        size = len(batch[0]) // self.world_size   # the batch size, but for RecBole's shorter last batch
        return tuple(a[self.rank * size:(self.rank + 1) * size] for a in batch)

    def __iter__(self):
        for _ in range(len(self)):
            yield self.next_batch()


class BPRSampler(_Sharded):
    """Batches of ``(users, positive items, negative items)``.

    ``batch_size`` distinct users per batch (with replacement only if there are fewer users), one positive drawn
    uniformly from the user's training items and one negative uniformly from the items the user has not
    interacted with in training. An epoch has ``n_batches`` batches (default ``n_train // batch_size + 1``, as in
    the official code).

    ``mode="interaction"`` (RecBole's protocol, see the module docstring): each epoch is one pass over the
    training interactions in a fresh random order, ``ceil(n_train / batch_size)`` batches, so users weigh by
    their number of interactions; the negatives are drawn as above. ``n_batches`` does not apply.
    """

    MODES = ("user", "interaction")

    def __init__(self, train: np.ndarray, n_items: int, batch_size: int, seed: int = 0, n_batches: int | None = None,
                 mode: str = "user"):
        if len(train) == 0:
            raise ValueError("the training split is empty: nothing to sample")
        if mode not in self.MODES:
            raise ValueError(f"cf_sampling: expected one of {', '.join(self.MODES)}, got {mode!r}")
        if mode == "interaction" and n_batches is not None:
            raise ValueError("n_batches does not apply to mode='interaction' (an epoch is one pass over the interactions)")
        self.mode = mode
        self.order, self.cursor = None, 0   # interaction mode: this epoch's order of the training rows, next row
        order = np.lexsort((train[:, 1], train[:, 0]))
        self.users_of, self.items = train[order, 0], train[order, 1]
        self.exist_users, self.start, self.count = np.unique(self.users_of, return_index=True, return_counts=True)
        self.n_items, self.batch_size, self.n_train = n_items, batch_size, len(train)
        self.seen = _PairSet(train[:, 0], train[:, 1], n_items)
        self.rng = np.random.default_rng(seed)
        self.n_batches = n_batches

    def __len__(self) -> int:
        if self.mode == "interaction":
            return -(-self.n_train // self.batch_size)
        return self.n_train // self.batch_size + 1 if self.n_batches is None else self.n_batches

    def _next_interactions(self) -> tuple[np.ndarray, np.ndarray]:
        """RecBole's order: the next ``batch_size`` rows of this epoch's permutation (a new one when it is used up)."""
        if self.order is None or self.cursor >= self.n_train:
            self.order, self.cursor = self.rng.permutation(self.n_train), 0
        rows = self.order[self.cursor:self.cursor + self.batch_size]
        self.cursor += len(rows)
        return self.users_of[rows], self.items[rows]

    def sample(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rng = self.rng
        if self.mode == "interaction":
            users, pos = self._next_interactions()
            neg = _rejection(lambda k: rng.integers(0, self.n_items, k),
                             lambda idx, cand: self.seen.contains(users[idx], cand), len(users), rng)
            return users, pos, neg
        n = len(self.exist_users)
        if self.batch_size <= n:
            rows = rng.choice(n, self.batch_size, replace=False)
        else:
            rows = rng.integers(0, n, self.batch_size)
        users = self.exist_users[rows]
        pos = self.items[self.start[rows] + (rng.random(len(rows)) * self.count[rows]).astype(np.int64)]
        neg = _rejection(lambda k: rng.integers(0, self.n_items, k),
                         lambda idx, cand: self.seen.contains(users[idx], cand), len(users), rng)
        return users, pos, neg

    def state_dict(self) -> dict:
        """The random generator's state (what a resumed run needs to draw the same batches); in interaction mode
        also the epoch's order and position."""
        state = {"rng": generator_state(self.rng)}
        if self.mode == "interaction":
            state["order"] = None if self.order is None else self.order.tolist()
            state["cursor"] = self.cursor
        return state

    def load_state_dict(self, state: dict) -> None:
        set_generator_state(self.rng, state["rng"])
        if self.mode == "interaction":
            order = state.get("order")
            self.order = None if order is None else np.asarray(order, dtype=np.int64)
            self.cursor = int(state.get("cursor", 0))


class KGSampler(_Sharded):
    """Batches of ``(heads, relations, tails, corrupted tails)`` over a triple list.

    ``triples`` is ``(T, 3)`` ``[h, r, t]``; ``n_nodes`` is the range corrupted tails are drawn from (all users
    and entities in KGAT). An epoch has ``n_batches`` batches (default ``T // batch_size + 1``).
    """

    def __init__(self, triples: np.ndarray, n_nodes: int, n_relations: int, batch_size: int,
                 n_batches: int | None = None, seed: int = 0):
        if len(triples) == 0:
            raise ValueError("no triples to sample from")
        order = np.argsort(triples[:, 0], kind="stable")
        self.triples = triples[order]
        self.heads, self.start, self.count = np.unique(self.triples[:, 0], return_index=True, return_counts=True)
        self.n_nodes, self.batch_size = n_nodes, batch_size
        self.n_batches = n_batches if n_batches is not None else len(triples) // batch_size + 1
        self.true = _PairSet(self.triples[:, 0] * n_relations + self.triples[:, 1], self.triples[:, 2], n_nodes)
        self.n_relations = n_relations
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return self.n_batches

    def sample(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        rng = self.rng
        n = len(self.heads)
        rows = rng.choice(n, self.batch_size, replace=False) if self.batch_size <= n else rng.integers(0, n, self.batch_size)
        pick = self.start[rows] + (rng.random(len(rows)) * self.count[rows]).astype(np.int64)
        h, r, t = self.triples[pick].T
        key = h * self.n_relations + r
        neg = _rejection(lambda k: rng.integers(0, self.n_nodes, k),
                         lambda idx, cand: self.true.contains(key[idx], cand), len(h), rng)
        return h, r, t, neg

    def state_dict(self) -> dict:
        """The random generator's state (what a resumed run needs to draw the same batches)."""
        return {"rng": generator_state(self.rng)}

    def load_state_dict(self, state: dict) -> None:
        set_generator_state(self.rng, state["rng"])
