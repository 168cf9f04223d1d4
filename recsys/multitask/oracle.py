"""Does the synthetic data contain the signals it plants? Oracle and features-blind reference scores.

The generator (:func:`recsys.multitask.data.synthetic_three_task`) stores, for every impression, the planted
features its labels are drawn from (``meta["planted"][split]``, columns ``meta["planted_names"]``):
``field_cross`` (the random table ``W[f2, f3]``), ``f4_effect`` (the +-1 effect of field f4, which task 3
reverses: the task conflict), ``target_in_like`` (1 when the target item occurs in the ``like`` sequence: the
sequence overlap) and ``user_item_affinity`` (``u . v``). Every task logit is linear in them, so

- :func:`oracle_auc` — a logistic regression per task on the planted features, fitted on the training split —
  is the Bayes-optimal ranker up to fitting noise: the ceiling a model learning the planted signals reaches;
- :func:`blind_auc` — a logistic regression per task on the one-hot categorical fields (no field crosses, no
  sequence) — sees neither the crossing nor the overlap: what a model that learned none of the planted
  interactions gets from per-value main effects (user, item popularity, f4).

If the oracle does not beat every trained baseline by a clear margin, the data do not carry the signals.
"""
from __future__ import annotations

import numpy as np

from .data import MultiTaskData
from .metrics import auc

__all__ = ["planted", "oracle_auc", "blind_auc", "item_rate_auc", "in_like_auc"]


def planted(data: MultiTaskData, split: str) -> np.ndarray:
    """The planted features ``(N, 4)`` of one split (raises if the dataset is not the synthetic generator's)."""
    table = data.meta.get("planted")
    if table is None:
        raise ValueError(f"dataset {data.name!r} has no planted features (only mtl-synthetic stores them in meta)")
    return table[split].numpy().astype(np.float64)


def _logistic(x_train, y_train, x_test, c: float = 1.0) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression
    if len(np.unique(y_train)) < 2:
        return np.zeros(x_test.shape[0])
    return LogisticRegression(C=c, max_iter=1000).fit(x_train, y_train).decision_function(x_test)


def oracle_auc(data: MultiTaskData, split: str = "test") -> dict[str, float]:
    """Test AUC per task of a logistic regression on the planted features (fitted on the training split)."""
    x_tr, x_te = planted(data, "train"), planted(data, split)
    y_tr, y_te = data.train.labels.numpy(), data.split(split).labels.numpy()
    return {t: auc(y_te[:, i], _logistic(x_tr, y_tr[:, i], x_te)) for i, t in enumerate(data.tasks)}


def _one_hot(data: MultiTaskData, split: str):
    from scipy.sparse import csr_matrix
    cat = data.split(split).cat.numpy()
    offsets = np.concatenate([[0], np.cumsum([data.vocab_sizes[v] for v in data.cat_vocab])[:-1]])
    cols = (cat + offsets).ravel()
    rows = np.repeat(np.arange(cat.shape[0]), cat.shape[1])
    width = int(sum(data.vocab_sizes[v] for v in data.cat_vocab))
    return csr_matrix((np.ones(cols.shape[0]), (rows, cols)), shape=(cat.shape[0], width))


def blind_auc(data: MultiTaskData, split: str = "test", c: float = 0.1) -> dict[str, float]:
    """Test AUC per task of a logistic regression on one-hot categorical fields only (features-blind)."""
    x_tr, x_te = _one_hot(data, "train"), _one_hot(data, split)
    y_tr, y_te = data.train.labels.numpy(), data.split(split).labels.numpy()
    return {t: auc(y_te[:, i], _logistic(x_tr, y_tr[:, i], x_te, c)) for i, t in enumerate(data.tasks)}


def item_rate_auc(data: MultiTaskData, split: str = "test", smoothing: float = 5.0) -> dict[str, float]:
    """AUC per task of the target item's smoothed training label rate (what item popularity alone gives)."""
    items, test_items = data.train.cat[:, 1].numpy(), data.split(split).cat[:, 1].numpy()
    size = int(max(items.max(), test_items.max())) + 1
    count = np.bincount(items, minlength=size)
    out = {}
    for i, t in enumerate(data.tasks):
        y = data.train.labels[:, i].numpy()
        rate = (np.bincount(items, weights=y, minlength=size) + smoothing * y.mean()) / (count + smoothing)
        out[t] = auc(data.split(split).labels[:, i].numpy(), rate[test_items])
    return out


def in_like_auc(data: MultiTaskData, split: str = "test") -> dict[str, float]:
    """AUC per task of the single indicator [target item in the like sequence]."""
    x = planted(data, split)[:, 2]
    y = data.split(split).labels.numpy()
    return {t: auc(y[:, i], x) for i, t in enumerate(data.tasks)}
