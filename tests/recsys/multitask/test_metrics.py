import math

import numpy as np
import pytest

from recsys.multitask.metrics import auc, gauc, multitask_metrics


def test_auc_hand_computed():
    # positives 0.8, 0.4; negatives 0.5, 0.1 -> pairs (0.8>0.5, 0.8>0.1, 0.4<0.5, 0.4>0.1) = 3/4
    assert auc([1, 0, 1, 0], [0.8, 0.5, 0.4, 0.1]) == pytest.approx(0.75)


def test_auc_ties_count_half():
    # one positive tied with one of two negatives: (1 + 0.5) / 2
    assert auc([1, 0, 0], [0.5, 0.5, 0.1]) == pytest.approx(0.75)


def test_auc_single_class_is_nan():
    assert math.isnan(auc([1, 1], [0.2, 0.3]))


def test_auc_matches_pairwise_count():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    s = rng.integers(0, 10, 200) / 10.0  # many ties
    pos, neg = s[y == 1], s[y == 0]
    pairs = (pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean()
    assert auc(y, s) == pytest.approx(pairs)


def test_gauc_hand_computed():
    # user 7: labels 1,0,0 scores .9,.5,.95 -> AUC 0.5 (3 impressions)
    # user 3: labels 0,1 scores .2,.1 -> AUC 0 (2 impressions); user 5: only positives -> skipped
    labels = [1, 0, 0, 0, 1, 1, 1]
    scores = [0.9, 0.5, 0.95, 0.2, 0.1, 0.3, 0.4]
    users = [7, 7, 7, 3, 3, 5, 5]
    assert gauc(labels, scores, users) == pytest.approx((0.5 * 3 + 0.0 * 2) / 5)


def test_gauc_equals_loop_with_ties():
    rng = np.random.default_rng(1)
    n = 300
    y = rng.integers(0, 2, n)
    s = rng.integers(0, 5, n).astype(float)
    g = rng.integers(0, 12, n)
    num = den = 0.0
    for u in np.unique(g):
        sel = g == u
        if 0 < y[sel].sum() < sel.sum():
            num += auc(y[sel], s[sel]) * sel.sum()
            den += sel.sum()
    assert gauc(y, s, g) == pytest.approx(num / den)


def test_multitask_metrics_keys_and_means():
    labels = np.array([[1, 0], [0, 1], [1, 1], [0, 0]], dtype=float)
    scores = np.array([[0.9, 0.1], [0.1, 0.9], [0.8, 0.2], [0.2, 0.3]])
    out = multitask_metrics(labels, scores, np.zeros(4, int), ["a", "b"])
    assert out["auc_a"] == pytest.approx(1.0)
    # b: positives .9, .2 vs negatives .1, .3 -> 3 of 4 pairs ordered
    assert out["auc_b"] == pytest.approx(0.75)
    assert out["mean_auc"] == pytest.approx(0.875)
    assert out["gauc_a"] == pytest.approx(1.0)


def test_bad_labels_rejected():
    with pytest.raises(ValueError, match="0 or 1"):
        auc([2, 0], [0.1, 0.2])
