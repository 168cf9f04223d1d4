"""Top-K ranking metrics from a hit matrix, vectorised over users.

Inputs everywhere: ``hits`` is a ``(U, K)`` boolean matrix, ``hits[u, r]`` true when the item ranked
``r`` (0-based) for user ``u`` is a ground-truth item; ``n_true`` is ``(U,)`` the number of ground-truth
items per user. Each function returns the ``(U,)`` per-user value at cut-off ``k <= K``.
"""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np

METRICS = ("recall", "ndcg", "precision", "hit", "mrr", "ndcg_kgat")


def _discount(k: int) -> np.ndarray:
    return 1.0 / np.log2(np.arange(k) + 2.0)  # ranks 0..k-1 -> 1/log2(rank+2)


def _check(hits: np.ndarray, k: int) -> np.ndarray:
    hits = np.asarray(hits, dtype=bool)
    if hits.ndim != 2:
        raise ValueError(f"hits must be a (users, K) boolean matrix, got shape {hits.shape}")
    if not 1 <= k <= hits.shape[1]:
        raise ValueError(f"k must be in [1, {hits.shape[1]}] (the length of the ranked lists), got {k}")
    return hits[:, :k]


def recall(hits: np.ndarray, n_true: np.ndarray, k: int) -> np.ndarray:
    """Share of the user's ground-truth items found in the top ``k``."""
    return _check(hits, k).sum(1) / np.maximum(np.asarray(n_true, np.float64), 1.0)


def precision(hits: np.ndarray, n_true: np.ndarray, k: int) -> np.ndarray:
    return _check(hits, k).sum(1) / float(k)


def hit(hits: np.ndarray, n_true: np.ndarray, k: int) -> np.ndarray:
    return _check(hits, k).any(1).astype(np.float64)


def mrr(hits: np.ndarray, n_true: np.ndarray, k: int) -> np.ndarray:
    """Reciprocal rank (1-based) of the first hit within the top ``k``; 0 without a hit."""
    h = _check(hits, k)
    first = h.argmax(1)
    return np.where(h.any(1), 1.0 / (first + 1.0), 0.0)


def ndcg(hits: np.ndarray, n_true: np.ndarray, k: int) -> np.ndarray:
    """Standard NDCG@k: DCG / IDCG with the ideal list holding ``min(n_true, k)`` relevant items."""
    h = _check(hits, k)
    disc = _discount(k)
    dcg = h @ disc
    ideal_cum = np.r_[0.0, np.cumsum(disc)]
    idcg = ideal_cum[np.clip(np.asarray(n_true, np.int64), 0, k)]
    return np.divide(dcg, idcg, out=np.zeros_like(dcg), where=idcg > 0)


def ndcg_kgat(hits: np.ndarray, n_true: np.ndarray, k: int) -> np.ndarray:
    """NDCG as computed by the official KGAT code (``Model/utility/metrics.py: ndcg_at_k``) — INFLATED.

    The ideal DCG is built from the hits present in the ranked list that was passed (the official code
    ranks the top ``max(Ks)`` once and sorts that list's hits), i.e. the ideal list holds
    ``min(hits in all K columns of `hits`, k)`` relevant items instead of ``min(n_true, k)``. A user
    with 10 ground-truth items and one hit, at rank 2 of a 10-long list, gets ndcg_kgat@10 = 0.631
    (= (1/log2 3) / 1) where ndcg@10 = 0.139 (= 0.631 / 4.544). Use it only to
    compare with numbers reported by KGAT and its forks; see ``/work/shared/papers/kgat.md``
    ("NDCG bug": LunaBlack/KGAT-pytorch issue #18, KGIN issue #18).
    """
    full = np.asarray(hits, dtype=bool)
    h = _check(full, k)
    disc = _discount(k)
    dcg = h @ disc
    ideal_cum = np.r_[0.0, np.cumsum(disc)]
    idcg = ideal_cum[np.minimum(full.sum(1), k)]
    return np.divide(dcg, idcg, out=np.zeros_like(dcg), where=idcg > 0)


FUNCTIONS = {"recall": recall, "ndcg": ndcg, "precision": precision, "hit": hit, "mrr": mrr,
             "ndcg_kgat": ndcg_kgat}


def check_metric_names(metrics: Iterable[str]) -> list[str]:
    out = [m.lower() for m in metrics]
    bad = [m for m in out if m not in FUNCTIONS]
    if bad:
        import difflib
        hints = {m: difflib.get_close_matches(m, list(FUNCTIONS), n=1) for m in bad}
        raise ValueError(f"unknown metric(s) {bad}; expected some of {list(FUNCTIONS)}"
                         + "".join(f"; {m!r}: did you mean {h[0]!r}?" for m, h in hints.items() if h))
    return out


def compute_metrics(hits: np.ndarray, n_true: np.ndarray, topk: Iterable[int],
                    metrics: Iterable[str]) -> dict[str, np.ndarray]:
    """Per-user values ``{"recall@20": (U,), ...}`` for every metric and every ``k`` in ``topk``,
    all from one ranked list of length ``max(topk)``."""
    names = check_metric_names(metrics)
    out: dict[str, np.ndarray] = {}
    for m in names:
        for k in topk:
            out[f"{m}@{k}"] = FUNCTIONS[m](hits, n_true, int(k))
    return out
