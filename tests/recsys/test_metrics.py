import math

import numpy as np
import pytest

from recsys.evaluation import compute_metrics, hit, mrr, ndcg, ndcg_kgat, precision, recall

# user 0: hits at ranks 1 and 3 (1-based), 3 relevant; user 1: none, 2 relevant;
# user 2: hit at rank 2, 1 relevant; user 3: hit only at rank 4, 2 relevant
HITS = np.array([[1, 0, 1, 0], [0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1]], dtype=bool)
N_TRUE = np.array([3, 2, 1, 2])
L2, L3, L4, L5 = math.log2(2), math.log2(3), math.log2(4), math.log2(5)


def test_recall_precision_hit_mrr_by_hand():
    np.testing.assert_allclose(recall(HITS, N_TRUE, 2), [1 / 3, 0, 1, 0])
    np.testing.assert_allclose(recall(HITS, N_TRUE, 4), [2 / 3, 0, 1, 1 / 2])
    np.testing.assert_allclose(precision(HITS, N_TRUE, 2), [1 / 2, 0, 1 / 2, 0])
    np.testing.assert_allclose(precision(HITS, N_TRUE, 4), [2 / 4, 0, 1 / 4, 1 / 4])
    np.testing.assert_allclose(hit(HITS, N_TRUE, 1), [1, 0, 0, 0])
    np.testing.assert_allclose(hit(HITS, N_TRUE, 4), [1, 0, 1, 1])
    np.testing.assert_allclose(mrr(HITS, N_TRUE, 4), [1, 0, 1 / 2, 1 / 4])
    np.testing.assert_allclose(mrr(HITS, N_TRUE, 3), [1, 0, 1 / 2, 0])


def test_ndcg_standard_by_hand():
    idcg3 = 1 / L2 + 1 / L3 + 1 / L4
    idcg2 = 1 / L2 + 1 / L3
    expected4 = [(1 / L2 + 1 / L4) / idcg3, 0, (1 / L3) / 1.0, (1 / L5) / idcg2]
    np.testing.assert_allclose(ndcg(HITS, N_TRUE, 4), expected4)
    np.testing.assert_allclose(ndcg(HITS, N_TRUE, 2), [1 / idcg2, 0, 1 / L3, 0])


def test_ndcg_kgat_is_inflated_and_differs():
    # ideal DCG from the hits inside the list: user 0 has 2 hits -> ideal 1 + 1/log2(3), not 3 items
    got = ndcg_kgat(HITS, N_TRUE, 4)
    np.testing.assert_allclose(got, [(1 / L2 + 1 / L4) / (1 / L2 + 1 / L3), 0, 1 / L3, 1 / L5])
    std = ndcg(HITS, N_TRUE, 4)
    assert got[0] > std[0] and got[3] > std[3]
    assert np.all(got >= std - 1e-12)
    # at k=2 the ideal still counts hits of the whole (top-4) list, as the official code does
    np.testing.assert_allclose(ndcg_kgat(HITS, N_TRUE, 2), [1 / (1 / L2 + 1 / L3), 0, 1 / L3, 0])


def test_compute_metrics_keys_and_values():
    out = compute_metrics(HITS, N_TRUE, [2, 4], ["Recall", "ndcg"])
    assert sorted(out) == ["ndcg@2", "ndcg@4", "recall@2", "recall@4"]
    np.testing.assert_allclose(out["recall@4"], recall(HITS, N_TRUE, 4))


def test_metric_errors():
    with pytest.raises(ValueError, match="did you mean 'recall'"):
        compute_metrics(HITS, N_TRUE, [2], ["recal"])
    with pytest.raises(ValueError, match=r"k must be in \[1, 4\]"):
        recall(HITS, N_TRUE, 5)


def test_ndcg_is_zero_for_a_user_without_relevant_items():
    import numpy as np

    from recsys.evaluation.metrics import ndcg
    hits = np.zeros((3, 5), dtype=bool)
    hits[1, 0] = True
    out = ndcg(hits, np.array([0, 1, 0]), 5)
    assert out.tolist() == [0.0, 1.0, 0.0]


def test_several_unknown_metrics_each_get_a_suggestion():
    import pytest

    from recsys.evaluation.metrics import check_metric_names
    with pytest.raises(ValueError) as info:
        check_metric_names(["recal", "ndgc", "hit"])
    assert str(info.value).endswith("; 'recal': did you mean 'recall'?; 'ndgc': did you mean 'ndcg'?")


def test_truthy_hits_count_once_and_ndcg_needs_relevant_items():
    # hits given as counts (e.g. from a sparse product): any non-zero entry is one hit
    counts = np.array([[2, 0, 3]])
    np.testing.assert_allclose(recall(counts, [2], 3), [1.0])
    np.testing.assert_allclose(precision(counts, [2], 3), [2 / 3])
    # a user without relevant items (n_true 0, or a negative count clipped to 0) has NDCG 0 whatever the list holds
    hits = np.array([[True, False], [True, True]])
    assert ndcg(hits, np.array([0, -1]), 2).tolist() == [0.0, 0.0]


def test_float_counts_are_accepted_for_n_true_and_count_hits_for_ndcg_kgat():
    np.testing.assert_allclose(ndcg(HITS, N_TRUE.astype(np.float64), 4), ndcg(HITS, N_TRUE, 4))
    counts = HITS.astype(np.int64) * 3                       # truthy counts: each is one hit
    np.testing.assert_allclose(ndcg_kgat(counts, N_TRUE, 2), ndcg_kgat(HITS, N_TRUE, 2))


def test_ndcg_divides_into_a_zeroed_buffer_without_warnings():
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")       # numpy warns when `where=` leaves an uninitialised output
        ndcg(HITS, N_TRUE, 4)
        ndcg_kgat(HITS, N_TRUE, 4)
