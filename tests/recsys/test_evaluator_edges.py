"""FullRankEvaluator at its edges: evaluate_scores with a user subset and with fewer remaining items than k,
compare_with_exact's backends (exact really exact, approx really the named index), its user subset, printout,
lists shorter than k and no users at all. (Written against mutants of recsys/evaluation/evaluator.py that
survived the sixth mutation run, docs/testing.md.)"""
import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recsys.evaluation import FullRankEvaluator

METRICS = ["recall", "ndcg", "precision", "hit", "mrr"]


def _problem(n_users=60, n_items=400, d=8, p_gt=0.03, seed=0):
    rng = np.random.default_rng(seed)
    user = torch.from_numpy(rng.standard_normal((n_users, d)).astype(np.float32))
    item = torch.from_numpy(rng.standard_normal((n_items, d)).astype(np.float32))
    excl = sp.csr_matrix(rng.random((n_users, n_items)) < 0.05, dtype=np.float32)
    gt = sp.csr_matrix((rng.random((n_users, n_items)) < p_gt) & (excl.toarray() == 0), dtype=np.float32)
    return user, item, gt, excl


def test_evaluate_scores_on_a_user_subset_equals_evaluate():
    user, item, gt, excl = _problem()
    ev = FullRankEvaluator([10], METRICS, chunk_size=7)
    users = np.arange(0, 60, 3)
    want = ev.evaluate(user, item, gt, excl, users=users)
    got = ev.evaluate_scores(lambda u: user[torch.from_numpy(u)] @ item.T, gt, excl, users=users)
    assert got == want
    assert got != ev.evaluate(user, item, gt, excl)


def test_evaluate_scores_with_fewer_remaining_items_than_k():
    # 3 items, item 0 excluded for user 0, so the list of 5 holds 2 items and 3 empty slots; user 0's only
    # relevant item is 1: a slot filled with item 1 (or with anything but "no item") would be a second hit
    user = torch.tensor([[1.0], [1.0]])
    item = torch.tensor([[3.0], [2.0], [1.0]])
    gt = sp.csr_matrix(np.array([[0, 1, 0], [0, 0, 1]], dtype=np.float32))
    excl = sp.csr_matrix(np.array([[1, 0, 0], [0, 0, 0]], dtype=np.float32))
    ev = FullRankEvaluator([5], ["recall", "precision", "mrr"])
    want = {"recall@5": 1.0, "precision@5": 2 / 5 / 2, "mrr@5": (1.0 + 1 / 3) / 2}
    got = ev.evaluate_scores(lambda u: user[torch.from_numpy(u)] @ item.T, gt, excl)
    assert got == pytest.approx(want, abs=1e-12)
    assert ev.evaluate(user, item, gt, excl) == pytest.approx(want, abs=1e-12)


def test_compare_with_exact_uses_the_exact_backend_and_the_named_index():
    user, item, gt, excl = _problem(n_items=2000, p_gt=0.01)
    truth = FullRankEvaluator([20], ["recall"]).evaluate(user, item, gt, excl)
    # an evaluator whose own backend is approximate: "exact" must still be exact, and "approx" the named Flat
    ev = FullRankEvaluator([20], ["recall"], backend="faiss", faiss_index="IVF64,Flat")
    r = ev.compare_with_exact(user, item, gt, excl, faiss_index="Flat", verbose=False)
    assert r["exact"] == truth and r["approx"] == truth and r["overlap"] == {"top@20": 1.0}
    # an exact evaluator (default index Flat): "approx" must be the named IVF index, searched with nprobe 1
    ev = FullRankEvaluator([20], ["recall"], backend="exact")
    r = ev.compare_with_exact(user, item, gt, excl, faiss_index="IVF64,Flat", verbose=False)
    assert r["exact"] == truth and r["overlap"]["top@20"] < 0.9
    users = np.flatnonzero(np.diff(gt.indptr) > 0)
    exact = ev.rank(user, item, users, excl)
    approx = ev.rank(user, item, users, excl, backend="faiss", faiss_index="IVF64,Flat")
    overlap = np.mean([len(set(a) & set(b)) / 20 for a, b in zip(approx.tolist(), exact.tolist())])
    assert r["overlap"]["top@20"] == pytest.approx(overlap, abs=1e-12)


def test_compare_with_exact_on_a_user_subset_prints_by_default(capsys):
    user, item, gt, excl = _problem()
    ev = FullRankEvaluator([10], ["recall"], backend="faiss")
    users = np.flatnonzero(np.diff(gt.indptr) > 0)[:5]
    r = ev.compare_with_exact(user, item, gt, excl, users=users)
    assert r["exact"] == ev.evaluate(user, item, gt, excl, users=users)
    assert r["exact"] != ev.evaluate(user, item, gt, excl)
    out = capsys.readouterr().out
    assert out.startswith("faiss Flat vs exact over 5 users: top-10 overlap 1.0000; recall@10 ")


def test_compare_with_exact_with_short_lists_and_with_no_users():
    user, item, gt, excl = _problem(n_users=6, n_items=12, p_gt=0.3)
    ev = FullRankEvaluator([15], ["recall"], backend="faiss")      # k = 15 > 12 items: every list ends in -1
    r = ev.compare_with_exact(user, item, gt, excl, verbose=False)
    assert r["overlap"] == {"top@15": 1.0} and r["lost"] == {"recall@15": 0.0}
    one_left = excl.tolil()                                        # user 0 may get only item 0, its test item
    one_left[0, 1:] = 1
    one_left[0, 0] = 0
    gt0 = gt.tolil()
    gt0[0, :] = 0
    gt0[0, 0] = 1
    r = ev.compare_with_exact(user, item, gt0.tocsr(), one_left.tocsr(), verbose=False)
    assert r["overlap"] == {"top@15": 1.0}
    for backend in ("exact", "faiss"):                             # empty slots are -1, nothing else
        ranked = ev.rank(user, item, np.arange(6), excl, backend=backend)
        assert set(ranked[ranked < 0].tolist()) == {-1} and (ranked < 12).all()
    one = FullRankEvaluator([3], ["recall"])                       # a one-item catalogue, the item excluded
    for backend in ("exact", "faiss"):
        got = one.rank(user[:1], item[:1], [0], sp.csr_matrix(np.ones((1, 1), np.float32)), backend=backend)
        assert got.tolist() == [[-1, -1, -1]]
    empty = sp.csr_matrix(gt.shape, dtype=np.float32)              # nobody has a test item: nothing to compare
    r = ev.compare_with_exact(user, item, empty, excl, verbose=False)
    assert r["overlap"] == {"top@15": 1.0} and r["exact"] == {"recall@15": 0.0}


def test_sharded_evaluate_ranks_only_its_chunks_and_gathers(monkeypatch):
    import recsys.evaluation.evaluator as evaluator
    user, item, gt, excl = _problem()
    ev = FullRankEvaluator([10], METRICS, chunk_size=8)
    want = ev.evaluate(user, item, gt, excl)
    n_users = int((np.diff(gt.indptr) > 0).sum())
    ranked_users, sent = [], {}
    real_rank = FullRankEvaluator.rank

    def spy_rank(self, user_emb, item_emb, users, *args, **kwargs):
        ranked_users.append(len(users))
        return real_rank(self, user_emb, item_emb, users, *args, **kwargs)
    monkeypatch.setattr(FullRankEvaluator, "rank", spy_rank)

    def gather(rank):
        def fake(obj):                                    # two ranks: rank 1's share recorded, then both returned
            sent[rank] = obj
            return [obj] if rank == 1 else [obj, sent[1]]
        return fake
    monkeypatch.setattr(evaluator, "all_gather_object", gather(1))
    ev.evaluate(user, item, gt, excl, shard=(1, 2))
    monkeypatch.setattr(evaluator, "all_gather_object", gather(0))
    assert ev.evaluate(user, item, gt, excl, shard=(0, 2)) == pytest.approx(want, abs=1e-12)
    mine0, mine1 = sent[0][0], sent[1][0]
    assert mine0.tolist() == [u for u in range(n_users) if (u // 8) % 2 == 0]      # chunks 0, 2, 4, ...
    assert sorted(mine0.tolist() + mine1.tolist()) == list(range(n_users))
    assert ranked_users == [len(mine1), len(mine0)]
    ranked_users.clear()
    monkeypatch.setattr(evaluator, "all_gather_object", lambda obj: pytest.fail("one process gathers nothing"))
    assert ev.evaluate(user, item, gt, excl, shard=(0, 1)) == want and ranked_users == [n_users]


def test_an_empty_user_list_gives_zeros_and_bad_shapes_are_named():
    user, item, gt, excl = _problem(n_users=6, n_items=12, p_gt=0.3)
    ev = FullRankEvaluator([5], ["recall", "hit"])
    assert ev.evaluate(user, item, gt, excl, users=[]) == {"recall@5": 0.0, "hit@5": 0.0}
    assert ev.evaluate_scores(lambda u: user[torch.from_numpy(u)] @ item.T, gt, excl, users=[]) == \
        {"recall@5": 0.0, "hit@5": 0.0}
    with pytest.raises(ValueError, match=r"must share d, got \(6, 8\) and \(12, 4\)"):
        ev.evaluate(user, item[:, :4], gt, excl)
    with pytest.raises(ValueError, match=r"must share d, got \(6,\) and \(12, 8\)"):
        ev.evaluate(user[:, 0], item, gt, excl)
    with pytest.raises(ValueError, match=r"must share d, got \(6, 8\) and \(12,\)"):
        ev.evaluate(user, item[:, 0], gt, excl)


def test_rank_uses_the_backend_index_params_and_shards_it_is_given():
    user, item, gt, excl = _problem(n_users=40, n_items=2000)
    users = np.arange(40)
    exact = FullRankEvaluator([20], ["recall"]).rank(user, item, users, excl)
    ivf = FullRankEvaluator([20], ["recall"], backend="faiss", faiss_index="IVF64,Flat")   # nprobe 1: approximate
    assert (ivf.rank(user, item, users, excl) != exact).any()
    np.testing.assert_array_equal(ivf.rank(user, item, users, excl, backend="exact"), exact)
    np.testing.assert_array_equal(ivf.rank(user, item, users, excl, faiss_index="Flat"), exact)
    plain = FullRankEvaluator([20], ["recall"])                  # exact evaluator asked for an approximate index
    assert (plain.rank(user, item, users, excl, backend="faiss", faiss_index="IVF64,Flat") != exact).any()
    full = FullRankEvaluator([20], ["recall"], backend="faiss", faiss_index="IVF64,Flat", faiss_params="nprobe=64")
    np.testing.assert_array_equal(full.rank(user, item, users, excl), exact)   # every list searched: exact
    # shards apply to the evaluator's own index (2000 / 3 items per shard cannot train IVF1000) ...
    sharded = FullRankEvaluator([20], ["recall"], backend="faiss", faiss_index="IVF1000,Flat", faiss_shards=3)
    with pytest.raises(ValueError, match="in the smallest of 3 shards"):
        sharded.rank(user, item, users, excl)
    # ... and not to an index named in the call (one IVF1000 over all 2000 items trains)
    assert sharded.rank(user, item, users[:3], excl, faiss_index="IVF1000,Flat").shape == (3, 20)


def test_rank_without_exclusions_fills_every_slot_and_takes_any_integer_ids():
    user, item, gt, excl = _problem(n_users=10, n_items=50)
    ev = FullRankEvaluator([20], ["recall"], backend="faiss")
    want = FullRankEvaluator([20], ["recall"]).rank(user, item, np.arange(10))
    got = ev.rank(user, item, np.arange(10))
    assert (got >= 0).all()
    np.testing.assert_array_equal(got, want)
    ids = np.array([3, 7, 1])
    for dtype in (np.uint8, np.int32):
        np.testing.assert_array_equal(ev.rank(user, item, ids.astype(dtype), excl), ev.rank(user, item, ids, excl))


def test_merge_exclude_keeps_a_positive_float32_pattern():
    from recsys.evaluation import merge_exclude
    a = sp.csr_matrix(np.array([[0, 2.5, 0], [1, 0, 0]]))
    b = sp.csr_matrix(np.array([[0, -1, 3], [0, 0, 0]]))
    for merged in (merge_exclude([a, b], (2, 3)), merge_exclude(a, (2, 3)), merge_exclude(None, (2, 3))):
        assert merged.dtype == np.float32 and (merged.data > 0).all()
    assert merge_exclude([a, b], (2, 3)).toarray().tolist() == [[0, 2, 1], [1, 0, 0]]
    with pytest.raises(ValueError, match=r"exclude matrix has shape \(2, 3\), expected \(2, 4\)"):
        merge_exclude(a, (2, 4))


def test_index_shards_of_one_part():
    from recsys.evaluation.indexes import index_shards
    part = _flat_index()
    one = index_shards([part])
    assert one.count() == 1 and one.d == 8 and one.ntotal == 30
    _, ids = one.search(np.eye(8, dtype=np.float32)[:2], 3)
    np.testing.assert_array_equal(ids, part.search(np.eye(8, dtype=np.float32)[:2], 3)[1])


def _flat_index():
    from recsys.evaluation import build_faiss_index
    return build_faiss_index(np.random.default_rng(0).standard_normal((30, 8)).astype(np.float32), "Flat")


def test_evaluator_defaults_and_topk_checks():
    ev = FullRankEvaluator()
    assert (ev.topk, ev.metrics, ev.backend, ev.faiss_index, ev.chunk_size, ev.show_progress, ev.faiss_params,
            ev.faiss_shards) == ([20], ["recall", "ndcg"], "exact", "Flat", 1024, False, None, 1)
    assert FullRankEvaluator(topk=10).topk == [10]
    assert FullRankEvaluator(topk=[40, 20, 20]).topk == [20, 40]
    for bad in ([], [0], [5, 0]):
        with pytest.raises(ValueError, match="topk must be a non-empty list of positive ints"):
            FullRankEvaluator(topk=bad)


def test_evaluate_scores_takes_integer_scores_and_leaves_the_score_tensor_alone():
    # a popularity baseline: integer counts, one tensor returned for every user (it may be model state)
    counts = torch.tensor([[5, 9, 1, 7]] * 3, dtype=torch.int64)
    scores32 = counts.float()
    gt = sp.csr_matrix(np.array([[1, 0, 0, 0], [0, 0, 0, 1], [0, 0, 1, 0]], dtype=np.float32))
    excl = sp.csr_matrix(np.array([[0, 1, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0]], dtype=np.float32))
    ev = FullRankEvaluator([1, 2], ["hit"])
    # user 0 ranks 3, 0 (item 1 excluded); user 1 ranks 3, 0; user 2 ranks 1, 3
    want = {"hit@1": 1 / 3, "hit@2": 2 / 3}
    assert ev.evaluate_scores(lambda u: counts, gt, excl) == pytest.approx(want)
    assert ev.evaluate_scores(lambda u: scores32, gt, excl) == pytest.approx(want)
    assert torch.equal(scores32, counts.float())                   # no -inf written into the caller's tensor


def test_retriever_recommends_ten_by_default():
    user, item, _, _ = _problem(n_users=4, n_items=30)
    from recsys.evaluation import Retriever
    items, scores = Retriever.from_embeddings(user, item).recommend(np.arange(4))
    assert items.shape == scores.shape == (4, 10)


def test_compare_with_exact_prints_every_metric_in_one_line(capsys):
    user, item, gt, excl = _problem()
    ev = FullRankEvaluator([10], ["recall", "ndcg"], backend="faiss")
    r = ev.compare_with_exact(user, item, gt, excl)
    e, a = r["exact"], r["approx"]
    assert capsys.readouterr().out == (
        f"faiss Flat vs exact over {len(np.flatnonzero(np.diff(gt.indptr) > 0))} users: top-10 overlap "
        f"{r['overlap']['top@10']:.4f}; recall@10 {e['recall@10']:.4f} -> {a['recall@10']:.4f}, "
        f"ndcg@10 {e['ndcg@10']:.4f} -> {a['ndcg@10']:.4f}\n")


def test_rerank_pads_short_lists_with_item_minus_one_and_minus_inf_scores():
    from recsys.evaluation.evaluator import rerank
    user = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    item = torch.tensor([[3.0, 1.0], [1.0, 2.0], [2.0, 5.0]], dtype=torch.float64)
    cand = np.array([[0, 1, 2], [2, 1, 0]])
    valid = np.array([[True, True, False], [True, True, True]])
    items, scores = rerank(user, item, cand, valid, k=5)
    assert items.tolist() == [[0, 1, -1, -1, -1], [2, 1, 0, -1, -1]]
    assert scores.shape == (2, 5) and scores.dtype == np.float64
    np.testing.assert_array_equal(scores, [[3.0, 1.0, -np.inf, -np.inf, -np.inf], [5.0, 2.0, 1.0, -np.inf, -np.inf]])
