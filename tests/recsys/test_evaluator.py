import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recsys.evaluation import FullRankEvaluator, Retriever

METRICS = ["recall", "ndcg", "ndcg_kgat", "precision", "hit", "mrr"]


def _random_problem(n_users=300, n_items=500, d=16, p_excl=0.05, p_gt=0.02, seed=0):
    rng = np.random.default_rng(seed)
    user = torch.from_numpy(rng.standard_normal((n_users, d)).astype(np.float32))
    item = torch.from_numpy(rng.standard_normal((n_items, d)).astype(np.float32))
    excl = sp.csr_matrix(rng.random((n_users, n_items)) < p_excl, dtype=np.float32)
    gt = sp.csr_matrix((rng.random((n_users, n_items)) < p_gt) & (excl.toarray() == 0), dtype=np.float32)
    return user, item, gt, excl


@pytest.mark.parametrize("p_excl", [0.05, 0.9])
def test_exact_and_faiss_flat_give_identical_metrics(p_excl):
    user, item, gt, excl = _random_problem(p_excl=p_excl)
    kw = dict(topk=[5, 20, 50], metrics=METRICS, chunk_size=64)
    a = FullRankEvaluator(backend="exact", **kw).evaluate(user, item, gt, excl)
    b = FullRankEvaluator(backend="faiss", faiss_index="Flat", **kw).evaluate(user, item, gt, excl)
    assert a == b
    assert a["recall@50"] > 0
    ev = FullRankEvaluator(**kw)
    users = np.arange(300)
    np.testing.assert_array_equal(ev.rank(user, item, users, excl, backend="exact"),
                                  ev.rank(user, item, users, excl, backend="faiss"))


def test_excluded_items_are_never_recommended():
    user, item, gt, excl = _random_problem(p_excl=0.3)
    valid = sp.csr_matrix(np.random.default_rng(1).random(excl.shape) < 0.1, dtype=np.float32)
    ev = FullRankEvaluator([30], ["recall"])
    for backend in ("exact", "faiss"):
        ranked = ev.rank(user, item, np.arange(300), [excl, valid], backend=backend)
        blocked = (excl + valid).toarray() > 0
        assert not blocked[np.arange(300)[:, None], ranked].any()
        assert (ranked >= 0).all() and all(len(set(r)) == 30 for r in ranked.tolist())


def test_hand_computed_ranking():
    # 1-d embeddings: item scores for user 0 are 3, 2, 1, 0 -> ranking 0, 1, 2, 3; item 0 is excluded
    user = torch.tensor([[1.0], [-1.0], [1.0]])
    item = torch.tensor([[3.0], [2.0], [1.0], [0.0]])
    gt = sp.csr_matrix(np.array([[0, 0, 1, 1], [1, 0, 0, 0], [0, 0, 0, 0]], dtype=np.float32))
    excl = sp.csr_matrix(np.array([[1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]], dtype=np.float32))
    ev = FullRankEvaluator([1, 2], ["recall", "precision", "mrr", "hit"])
    out = ev.evaluate(user, item, gt, excl)
    # user 0 ranks [1, 2, 3]: top-2 has item 2 (hit at rank 2); user 1 ranks [3, 2, 1, 0]: no hit in 2
    # user 2 has no ground truth and is skipped
    assert out == {"recall@1": 0.0, "recall@2": 0.25, "precision@1": 0.0, "precision@2": 0.25,
                   "mrr@1": 0.0, "mrr@2": 0.25, "hit@1": 0.0, "hit@2": 0.5}
    only1 = ev.evaluate(user, item, gt, excl, users=np.array([1, 2]))
    assert only1["hit@2"] == 0.0


def test_evaluate_scores_matches_dot_product():
    user, item, gt, excl = _random_problem()
    ev = FullRankEvaluator([10, 20], METRICS, chunk_size=100)
    a = ev.evaluate(user, item, gt, excl)
    b = ev.evaluate_scores(lambda u: user[torch.from_numpy(u)] @ item.T, gt, excl)
    assert a == b
    with pytest.raises(ValueError, match=r"score_fn returned shape \(100, 3\)"):
        ev.evaluate_scores(lambda u: torch.zeros(len(u), 3), gt, excl)


def test_approximate_index_reports_recall_lost():
    user, item, gt, excl = _random_problem(n_items=2000, p_gt=0.01)
    ev = FullRankEvaluator([20], ["recall", "ndcg"], backend="faiss")
    for index in ("HNSW32", "IVF16,Flat"):
        r = ev.compare_with_exact(user, item, gt, excl, faiss_index=index, verbose=False)
        lost = r["recall_lost"]["top@20"]
        assert 0.0 <= lost <= 1.0 and r["overlap"]["top@20"] == pytest.approx(1 - lost)
        assert set(r["lost"]) == {"recall@20", "ndcg@20"}
    flat = ev.compare_with_exact(user, item, gt, excl, faiss_index="Flat", verbose=False)
    assert flat["recall_lost"]["top@20"] == 0.0 and all(v == 0.0 for v in flat["lost"].values())


def test_evaluator_argument_errors():
    user, item, gt, excl = _random_problem(n_users=5, n_items=7)
    with pytest.raises(ValueError, match="unknown metric"):
        FullRankEvaluator([5], ["auc"])
    with pytest.raises(ValueError, match="backend"):
        FullRankEvaluator([5], ["recall"], backend="annoy")
    with pytest.raises(ValueError, match=r"ground_truth has shape \(5, 6\), expected \(5, 7\)"):
        FullRankEvaluator([5], ["recall"]).evaluate(user, item, gt[:, :6], excl)


def test_retriever_ids_vectors_save_load(tmp_path):
    user, item, gt, excl = _random_problem()
    ev = FullRankEvaluator([10], ["recall"])
    ids = np.array([3, 7, 11])
    expected = ev.rank(user, item, ids, excl)
    for backend in ("faiss", "exact"):
        r = Retriever.from_embeddings(user, item, excl, backend=backend)
        items, scores = r.recommend(ids, 10)
        np.testing.assert_array_equal(items, expected)
        assert np.all(np.diff(scores, axis=1) <= 0)
    r = Retriever.from_embeddings(user, item, excl)
    path = r.save(tmp_path / "items.faiss")
    loaded = Retriever.load(path, user_emb=user, exclude=excl)
    np.testing.assert_array_equal(loaded.recommend(ids, 10)[0], expected)
    # by vector, without exclusion: the plain top-10
    items, _ = Retriever.load(path).recommend(user[ids], 10)
    np.testing.assert_array_equal(items, torch.topk(user[ids] @ item.T, 10).indices.numpy())
    with pytest.raises(ValueError, match="needs user_emb"):
        Retriever(item).recommend(ids, 5)
    with pytest.raises(FileNotFoundError):
        Retriever.load(tmp_path / "missing.faiss")
