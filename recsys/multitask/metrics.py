"""Ranking metrics of multi-task CTR models: AUC and user-grouped AUC (gAUC).

AUC is the Mann-Whitney statistic with tied scores counted half (average ranks). gAUC is the AUC of each
user's impressions, averaged over users that have both a positive and a negative, weighted by the user's
number of impressions (FuxiCTR's ``gAUC``).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.stats import rankdata

__all__ = ["auc", "gauc", "multitask_metrics"]


def _check(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels, dtype=np.float64).reshape(-1)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if labels.shape != scores.shape:
        raise ValueError(f"labels and scores must have the same length, got {labels.shape[0]} and {scores.shape[0]}")
    if not np.isin(labels, (0.0, 1.0)).all():
        raise ValueError("labels must be 0 or 1")
    return labels, scores


def auc(labels: Sequence[float] | np.ndarray, scores: Sequence[float] | np.ndarray) -> float:
    """Area under the ROC curve; NaN when only one class is present."""
    labels, scores = _check(labels, scores)
    n_pos = labels.sum()
    n_neg = len(labels) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)                                   # average ranks for ties
    return float((ranks[labels == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def gauc(labels: Sequence[float] | np.ndarray, scores: Sequence[float] | np.ndarray,
         groups: Sequence[int] | np.ndarray) -> float:
    """Impression-weighted mean of per-group AUC over groups with both classes; NaN if there are none."""
    labels, scores = _check(labels, scores)
    groups = np.asarray(groups).reshape(-1)
    if groups.shape != labels.shape:
        raise ValueError(f"groups must have one entry per label, got {groups.shape[0]} for {labels.shape[0]}")
    if len(labels) == 0:
        return float("nan")
    order = np.lexsort((scores, groups))
    g, s, y = groups[order], scores[order], labels[order]
    n = len(g)
    new_group = np.r_[True, g[1:] != g[:-1]]
    new_tie = new_group | np.r_[True, s[1:] != s[:-1]]
    group_id = np.cumsum(new_group) - 1
    group_start = np.flatnonzero(new_group)
    tie_id = np.cumsum(new_tie) - 1
    tie_start = np.flatnonzero(new_tie)
    tie_end = np.r_[tie_start[1:], n]
    # average 1-based rank of each tie block within its group
    tie_rank = (tie_start + tie_end - 1) / 2.0 + 1 - group_start[group_id[tie_start]]
    rank = tie_rank[tie_id]
    n_groups = len(group_start)
    size = np.bincount(group_id, minlength=n_groups).astype(np.float64)
    n_pos = np.bincount(group_id, weights=y, minlength=n_groups)
    n_neg = size - n_pos
    rank_pos = np.bincount(group_id, weights=rank * y, minlength=n_groups)
    ok = (n_pos > 0) & (n_neg > 0)
    if not ok.any():
        return float("nan")
    per_group = (rank_pos[ok] - n_pos[ok] * (n_pos[ok] + 1) / 2) / (n_pos[ok] * n_neg[ok])
    return float((per_group * size[ok]).sum() / size[ok].sum())


def multitask_metrics(labels: np.ndarray, scores: np.ndarray, users: np.ndarray, tasks: Sequence[str]) -> dict[str, float]:
    """``auc_<task>``, ``gauc_<task>`` per task plus ``mean_auc`` and ``mean_gauc`` (over tasks with a value)."""
    labels, scores = np.asarray(labels), np.asarray(scores)
    if labels.ndim != 2 or labels.shape != scores.shape or labels.shape[1] != len(tasks):
        raise ValueError(f"labels and scores must both be (N, {len(tasks)}), got {labels.shape} and {scores.shape}")
    out: dict[str, float] = {}
    for i, t in enumerate(tasks):
        out[f"auc_{t}"] = auc(labels[:, i], scores[:, i])
        out[f"gauc_{t}"] = gauc(labels[:, i], scores[:, i], users)
    for kind in ("auc", "gauc"):
        vals = [out[f"{kind}_{t}"] for t in tasks if not np.isnan(out[f"{kind}_{t}"])]
        out[f"mean_{kind}"] = float(np.mean(vals)) if vals else float("nan")
    return out
