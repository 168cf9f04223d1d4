"""Full-ranking evaluation: score every item for every user, drop the excluded (training) items, take the
top ``max(topk)`` and compute metrics against the ground truth.

Two backends give one result:

- ``exact``: chunked ``user_emb @ item_emb.T`` in torch (float32) and ``torch.topk``;
- ``faiss``: an inner-product index over the items (``Flat`` = exact; ``HNSW32``, ``IVF<n>,Flat``,
  ``IVF<n>,PQ<m>`` approximate; any of them sharded over contiguous item-id ranges with ``Shards<S>,<spec>``
  or ``faiss_shards=S``, see :mod:`.indexes`), searched for ``k + (most items excluded for a user of the
  chunk)`` candidates.

Both re-score their candidates in float64 and order them by (score desc, item id asc), and fetch a few
spare candidates, so float32 rounding and ties cannot make the exact and ``Flat`` backends disagree.

Several processes (``evaluate(..., shard=(rank, world_size))``): the users are cut into the chunks one process
would rank, chunk ``c`` is ranked by rank ``c % world_size``, and the per-user metrics are gathered from every
rank and averaged in user order, so every rank gets exactly the single process's numbers.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from graphattn.training.distributed import all_gather_object

from .indexes import _np32, build_faiss_index, split_shards
from .metrics import check_metric_names, compute_metrics

SPARE = 8  # candidates fetched beyond k so the float64 re-ranking sees past float32 near-ties


def merge_exclude(exclude: sp.spmatrix | Sequence[sp.spmatrix] | None, shape: tuple[int, int]) -> sp.csr_matrix:
    """One boolean-pattern CSR from a CSR or a list of them (e.g. train + valid)."""
    if exclude is None:
        return sp.csr_matrix(shape, dtype=np.float32)
    mats = [exclude] if sp.issparse(exclude) else list(exclude)
    out = sp.csr_matrix(shape, dtype=np.float32)
    for m in mats:
        if m.shape != shape:
            raise ValueError(f"exclude matrix has shape {m.shape}, expected {shape} (users x items)")
        out = out + (sp.csr_matrix(m) != 0).astype(np.float32)
    out.sum_duplicates()
    return out.tocsr()


def _row_keys(m: sp.csr_matrix, n_cols: int) -> np.ndarray:
    """Sorted ``row * n_cols + col`` of the non-zeros of ``m`` (rows renumbered 0..len-1)."""
    rows = np.repeat(np.arange(m.shape[0], dtype=np.int64), np.diff(m.indptr))
    return np.sort(rows * n_cols + m.indices.astype(np.int64))


def _in_rows(items: np.ndarray, m: sp.csr_matrix, n_cols: int) -> np.ndarray:
    """``(B, C)`` bool: ``items[b, c]`` is a non-zero column of row ``b`` of ``m``; -1 never is."""
    keys = np.arange(items.shape[0], dtype=np.int64)[:, None] * n_cols + items
    return np.isin(keys, _row_keys(m, n_cols)) & (items >= 0)


def rerank(user_emb: torch.Tensor, item_emb: torch.Tensor, cand: np.ndarray, valid: np.ndarray,
           k: int) -> tuple[np.ndarray, np.ndarray]:
    """Float64 re-scoring of candidates, order (score desc, item asc), first ``k``; invalid -> item -1."""
    b, c = cand.shape
    idx = torch.from_numpy(np.where(valid, cand, 0)).reshape(-1).to(item_emb.device)
    u = user_emb.detach().to("cpu", torch.float64)
    items = item_emb.detach()
    s = np.empty((b, c))
    step = max(1, (1 << 22) // max(1, b * u.shape[1]))        # candidate columns per block: <= 32 MB of float64
    for j in range(0, c, step):                                 # (B, step, d) gathered at a time, not (B, C, d)
        cols = idx.view(b, c)[:, j:j + step].reshape(-1)
        v = items[cols].to("cpu", torch.float64).reshape(b, -1, u.shape[1])
        s[:, j:j + step] = torch.einsum("bd,bcd->bc", u, v).numpy()
    s = np.where(valid, s, -np.inf)
    order = np.lexsort((np.where(valid, cand, np.iinfo(np.int64).max), -s), axis=-1)[:, :k]
    items = np.take_along_axis(np.where(valid, cand, -1), order, 1)
    scores = np.take_along_axis(s, order, 1)
    if items.shape[1] < k:  # fewer items than k in the catalogue
        pad = k - items.shape[1]
        items = np.pad(items, ((0, 0), (0, pad)), constant_values=-1)
        scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf)
    return items, scores


def exact_candidates(user_emb: torch.Tensor, item_emb: torch.Tensor, excl: sp.csr_matrix,
                     n: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-``n`` items per row by float32 dot product with ``excl`` rows masked to -inf."""
    scores = user_emb.detach() @ item_emb.detach().T  # (B, I), a fresh tensor we may modify
    return _masked_topk(scores, excl, n, copy=False)


def _masked_topk(scores: torch.Tensor, excl: sp.csr_matrix, n: int,
                 copy: bool = True) -> tuple[np.ndarray, np.ndarray]:
    scores = scores.detach().to(torch.float32)
    if copy:  # score_fn output may alias model state
        scores = scores.clone()
    rows = np.repeat(np.arange(excl.shape[0]), np.diff(excl.indptr))
    if len(rows):
        scores[torch.from_numpy(rows).to(scores.device), torch.from_numpy(excl.indices.astype(np.int64)).to(
            scores.device)] = -torch.inf
    n = min(n, scores.shape[1])
    val, idx = torch.topk(scores, n, dim=1)
    val, idx = val.cpu().numpy(), idx.cpu().numpy().astype(np.int64)
    return idx, val > -np.inf


def faiss_candidates(index: Any, user_emb: torch.Tensor | np.ndarray, excl: sp.csr_matrix,
                     n: int, n_items: int) -> tuple[np.ndarray, np.ndarray]:
    """Search ``n + max excluded`` per row, drop excluded / missing ids (vectorised)."""
    extra = int(np.diff(excl.indptr).max(initial=0))
    n_search = min(n + extra, n_items)
    _, ids = index.search(np.ascontiguousarray(_np32(user_emb)), n_search)
    ids = ids.astype(np.int64)
    valid = (ids >= 0) & ~_in_rows(ids, excl, n_items)
    return ids, valid


class FullRankEvaluator:
    """Full-ranking top-K evaluation.

    Args:
        topk: cut-offs, e.g. ``[20, 40]``; one list of length ``max(topk)`` serves them all.
        metrics: names from ``recall, ndcg, precision, hit, mrr, ndcg_kgat``.
        backend: ``"exact"`` or ``"faiss"``.
        faiss_index: faiss factory string: ``"Flat"`` (exact), ``"HNSW32"``, ``"IVF64,Flat"``, ...
        faiss_params: faiss parameter string applied after building, e.g. ``"nprobe=16"``, ``"efSearch=128"``.
        faiss_shards: cut the items into this many contiguous id ranges, one index each, searched together
            (``faiss.IndexShards``); the same as prefixing ``faiss_index`` with ``Shards<S>,``.
        chunk_size: users scored at once.
        show_progress: tqdm bar over chunks.
    """

    def __init__(self, topk: Sequence[int] = (20,), metrics: Sequence[str] = ("recall", "ndcg"),
                 backend: str = "exact", faiss_index: str = "Flat", chunk_size: int = 1024,
                 show_progress: bool = False, faiss_params: str | None = None, faiss_shards: int = 1) -> None:
        self.topk = sorted({int(k) for k in ([topk] if isinstance(topk, int) else topk)})
        if not self.topk or self.topk[0] < 1:
            raise ValueError(f"topk must be a non-empty list of positive ints, got {topk!r}")
        self.metrics = check_metric_names(metrics)
        if backend not in ("exact", "faiss"):
            raise ValueError(f"backend must be 'exact' or 'faiss', got {backend!r}")
        self.backend, self.faiss_index, self.faiss_params = backend, faiss_index, faiss_params
        self.chunk_size, self.show_progress = int(chunk_size), show_progress
        self.faiss_shards = split_shards(faiss_index, faiss_shards)[1]  # checks the string and the count early

    # ---- ranking -------------------------------------------------------------------------------
    def _users(self, ground_truth: sp.csr_matrix, users: np.ndarray | None) -> np.ndarray:
        n_true = np.diff(ground_truth.indptr)
        all_users = np.arange(ground_truth.shape[0]) if users is None else np.asarray(users, np.int64)
        return all_users[n_true[all_users] > 0]

    def _chunks(self, users: np.ndarray):
        starts = range(0, len(users), self.chunk_size)
        if self.show_progress:
            from tqdm.auto import tqdm
            starts = tqdm(starts, desc="evaluate", unit="chunk", leave=False)
        for s in starts:
            yield users[s:s + self.chunk_size]

    def rank(self, user_emb: torch.Tensor, item_emb: torch.Tensor, users: np.ndarray,
             exclude: sp.spmatrix | Sequence[sp.spmatrix] | None = None, k: int | None = None,
             backend: str | None = None, faiss_index: str | None = None) -> np.ndarray:
        """``(len(users), k)`` top items (-1 where fewer than ``k`` items remain)."""
        k = k or self.topk[-1]
        backend = backend or self.backend
        n_users, n_items = user_emb.shape[0], item_emb.shape[0]
        excl = merge_exclude(exclude, (n_users, n_items))
        index = build_faiss_index(item_emb, faiss_index or self.faiss_index, self.faiss_params,
                                  None if faiss_index else self.faiss_shards) if backend == "faiss" else None
        users = np.asarray(users, np.int64)
        out = np.full((len(users), k), -1, np.int64)
        pos = 0
        for chunk in self._chunks(users):
            u = user_emb[torch.from_numpy(chunk).to(user_emb.device)]
            ex = excl[chunk]
            if index is None:
                cand, valid = exact_candidates(u, item_emb, ex, k + SPARE)
            else:
                cand, valid = faiss_candidates(index, u, ex, k + SPARE, n_items)
            out[pos:pos + len(chunk)] = rerank(u, item_emb, cand, valid, k)[0]
            pos += len(chunk)
        return out

    def _per_user(self, ranked: np.ndarray, ground_truth: sp.csr_matrix, users: np.ndarray) -> dict[str, np.ndarray]:
        gt = ground_truth[users]
        hits = _in_rows(ranked, gt, ground_truth.shape[1])
        return compute_metrics(hits, np.diff(gt.indptr), self.topk, self.metrics)

    def _metrics_from_ranked(self, ranked: np.ndarray, ground_truth: sp.csr_matrix,
                             users: np.ndarray) -> dict[str, float]:
        return _means(self._per_user(ranked, ground_truth, users))

    # ---- public ------------------------------------------------------------------------------------
    def evaluate(self, user_emb: torch.Tensor, item_emb: torch.Tensor, ground_truth: sp.spmatrix,
                 exclude: sp.spmatrix | Sequence[sp.spmatrix] | None = None,
                 users: np.ndarray | None = None, shard: tuple[int, int] = (0, 1)) -> dict[str, float]:
        """Metrics ``{"recall@20": ..., ...}`` averaged over the given users (default: all) that have at
        least one ground-truth item. Scores are ``user_emb @ item_emb.T``.

        ``shard = (rank, world_size)`` with ``world_size > 1`` (every rank of an initialised process group calls
        it with the same arguments): this rank ranks the chunks ``rank, rank + world_size, ...`` of
        ``chunk_size`` users and every rank returns the metrics of all users, equal to a single process's.

        Shapes:
            user_emb: ``(U, d)``; item_emb: ``(I, d)``; ground_truth, exclude: ``(U, I)`` CSR.
        """
        ground_truth = sp.csr_matrix(ground_truth)
        _check_shapes(user_emb, item_emb, ground_truth)
        users = self._users(ground_truth, users)
        rank, world_size = shard
        if world_size == 1:
            ranked = self.rank(user_emb, item_emb, users, exclude)
            return self._metrics_from_ranked(ranked, ground_truth, users)
        # whole chunks, as one process cuts them, so each user's ranking is computed exactly as there
        mine = np.concatenate([np.arange(s, min(s + self.chunk_size, len(users)))
                               for s in range(rank * self.chunk_size, len(users), world_size * self.chunk_size)]
                              + [np.zeros(0, np.int64)])
        ranked = self.rank(user_emb, item_emb, users[mine], exclude)
        local = self._per_user(ranked, ground_truth, users[mine])
        per_user = {name: np.empty(len(users)) for name in local}
        for positions, values in all_gather_object((mine, local)):
            for name, v in values.items():
                per_user[name][positions] = v
        return _means(per_user)

    def evaluate_scores(self, score_fn: Callable[[np.ndarray], torch.Tensor], ground_truth: sp.spmatrix,
                        exclude: sp.spmatrix | Sequence[sp.spmatrix] | None = None,
                        users: np.ndarray | None = None) -> dict[str, float]:
        """Like :meth:`evaluate` for models whose score is not a dot product:
        ``score_fn(users) -> (len(users), n_items)`` scores. Ties are broken by ``torch.topk``."""
        ground_truth = sp.csr_matrix(ground_truth)
        excl = merge_exclude(exclude, ground_truth.shape)
        users = self._users(ground_truth, users)
        k = self.topk[-1]
        ranked = np.full((len(users), k), -1, np.int64)
        pos = 0
        for chunk in self._chunks(users):
            scores = torch.as_tensor(score_fn(chunk))
            if scores.shape != (len(chunk), ground_truth.shape[1]):
                raise ValueError(f"score_fn returned shape {tuple(scores.shape)}, expected "
                                 f"({len(chunk)}, {ground_truth.shape[1]}) = (len(users), n_items)")
            idx, valid = _masked_topk(scores, excl[chunk], k)
            ranked[pos:pos + len(chunk), :idx.shape[1]] = np.where(valid, idx, -1)
            pos += len(chunk)
        return self._metrics_from_ranked(ranked, ground_truth, users)

    def compare_with_exact(self, user_emb: torch.Tensor, item_emb: torch.Tensor, ground_truth: sp.spmatrix,
                           exclude: sp.spmatrix | Sequence[sp.spmatrix] | None = None,
                           users: np.ndarray | None = None, faiss_index: str | None = None,
                           verbose: bool = True) -> dict[str, dict[str, float]]:
        """Metrics of the faiss index (``faiss_index`` or this evaluator's) next to exact ranking.

        Returns ``{"exact": {...}, "approx": {...}, "lost": {...}, "overlap": {"top@K": ...},
        "recall_lost": {"top@K": ...}}`` where ``lost[m] = exact[m] - approx[m]`` (can be slightly
        negative by luck), ``overlap`` is the share of the exact top-K list the index also returns (its
        recall against exact search) and ``recall_lost = 1 - overlap`` (always >= 0).
        """
        ground_truth = sp.csr_matrix(ground_truth)
        _check_shapes(user_emb, item_emb, ground_truth)
        users = self._users(ground_truth, users)
        exact = self.rank(user_emb, item_emb, users, exclude, backend="exact")
        approx = self.rank(user_emb, item_emb, users, exclude, backend="faiss", faiss_index=faiss_index)
        m_exact = self._metrics_from_ranked(exact, ground_truth, users)
        m_approx = self._metrics_from_ranked(approx, ground_truth, users)
        k = self.topk[-1]
        found = _in_rows(approx, sp.csr_matrix((np.ones(exact.size), (np.repeat(np.arange(len(users)), k),
                                                np.where(exact >= 0, exact, 0).ravel())),
                                               shape=(len(users), item_emb.shape[0])), item_emb.shape[0])
        n_exact = np.maximum((exact >= 0).sum(1), 1)
        overlap = float((found.sum(1) / n_exact).mean()) if len(users) else 1.0
        result = {"exact": m_exact, "approx": m_approx,
                  "lost": {m: m_exact[m] - m_approx[m] for m in m_exact},
                  "overlap": {f"top@{k}": overlap}, "recall_lost": {f"top@{k}": 1.0 - overlap}}
        if verbose:
            name = faiss_index or self.faiss_index
            print(f"faiss {name} vs exact over {len(users)} users: top-{k} overlap {overlap:.4f}; "
                  + ", ".join(f"{m} {m_exact[m]:.4f} -> {m_approx[m]:.4f}" for m in m_exact))
        return result


def _means(per_user: dict[str, np.ndarray]) -> dict[str, float]:
    return {name: float(v.mean()) if len(v) else 0.0 for name, v in per_user.items()}


def _check_shapes(user_emb: torch.Tensor, item_emb: torch.Tensor, ground_truth: sp.csr_matrix) -> None:
    if user_emb.ndim != 2 or item_emb.ndim != 2 or user_emb.shape[1] != item_emb.shape[1]:
        raise ValueError(f"user_emb (U, d) and item_emb (I, d) must share d, got {tuple(user_emb.shape)} "
                         f"and {tuple(item_emb.shape)}")
    if ground_truth.shape != (user_emb.shape[0], item_emb.shape[0]):
        raise ValueError(f"ground_truth has shape {ground_truth.shape}, expected "
                         f"({user_emb.shape[0]}, {item_emb.shape[0]}) = (n_users, n_items)")
