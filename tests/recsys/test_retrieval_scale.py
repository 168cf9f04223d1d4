"""Retrieval at scale: sharded indexes equal the unsharded one exactly, ANN indexes (IVF-PQ, HNSW) keep most of
the exact top-K on clustered data, and indexes that cannot be built or trained say why."""
import numpy as np
import pytest
import scipy.sparse as sp
import torch

import recsys  # noqa: F401  (registers the recsys task, models and datasets)
from graphattn.config import Config
from graphattn.registry import get_model
from recsys.evaluation import FullRankEvaluator, Retriever, build_faiss_index, index_nbytes
from recsys.export import Recommender, export_index
from recsys.task import load_data


def _clustered(n_items=4000, n_queries=200, d=32, n_clusters=40, seed=0):
    """Items and queries around shared centres, so that neighbours exist and ANN recall means something."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_clusters, d)).astype(np.float32)
    items = centres[rng.integers(n_clusters, size=n_items)] + 0.3 * rng.standard_normal((n_items, d))
    queries = centres[rng.integers(n_clusters, size=n_queries)] + 0.3 * rng.standard_normal((n_queries, d))
    return torch.from_numpy(items.astype(np.float32)), torch.from_numpy(queries.astype(np.float32))


def _exclusion(n_rows, n_items, p=0.05, seed=1):
    rng = np.random.default_rng(seed)
    return sp.csr_matrix(rng.random((n_rows, n_items)) < p, dtype=np.float32)


@pytest.mark.parametrize("n_items", [1003, 64])
def test_sharded_flat_equals_flat_exactly(n_items, tmp_path):
    rng = np.random.default_rng(n_items)
    items = torch.from_numpy(rng.standard_normal((n_items, 16)).astype(np.float32))
    users = torch.from_numpy(rng.standard_normal((50, 16)).astype(np.float32))
    items[n_items - 1] = items[3]                                # an exact tie between items of different shards
    excl = _exclusion(50, n_items, p=0.3)
    ids = np.arange(50)
    flat = Retriever.from_embeddings(users, items, excl, index="Flat")
    want_items, want_scores = flat.recommend(ids, 20)
    for r in (Retriever.from_embeddings(users, items, excl, index="Flat", shards=4),
              Retriever.from_embeddings(users, items, excl, index="Shards7,Flat")):
        got_items, got_scores = r.recommend(ids, 20)
        np.testing.assert_array_equal(got_items, want_items)
        np.testing.assert_array_equal(got_scores, want_scores)
        for row, u in enumerate(ids):
            assert not set(got_items[row]) & set(excl[u].indices)
    # saved as an .npz of shards and read back
    r = Retriever.from_embeddings(users, items, excl, index="Shards3,Flat")
    loaded = Retriever.load(r.save(tmp_path / "items.faiss"), user_emb=users, exclude=excl)
    assert loaded.index.count() == 3 and loaded.n_items == n_items
    np.testing.assert_array_equal(loaded.recommend(ids, 20)[0], want_items)
    # the evaluator ranks identically with or without shards
    ev = FullRankEvaluator([20], ["recall"], backend="faiss", faiss_shards=5)
    np.testing.assert_array_equal(ev.rank(users, items, ids, excl), ev.rank(users, items, ids, excl, backend="exact"))


def test_sharded_ids_map_back_to_global_items():
    items, _ = _clustered(n_items=1000, d=8)
    items = torch.nn.functional.normalize(items, dim=1)         # unit vectors: each item is its own best match
    index = build_faiss_index(items, "Flat", shards=4)
    assert index.count() == 4 and index.ntotal == 1000
    _, ids = index.search(items[[0, 260, 999]].numpy(), 1)
    np.testing.assert_array_equal(ids[:, 0], [0, 260, 999])
    assert [index.at(s).ntotal for s in range(4)] == [250, 250, 250, 250]


@pytest.mark.parametrize("spec, params, shards, bound", [
    ("IVF32,PQ8", "nprobe=8", None, 0.6),
    ("IVF16,PQ8", "nprobe=4", 2, 0.6),
    ("HNSW16", "efSearch=64", None, 0.9),
    ("IVF32,Flat", "nprobe=8", None, 0.9),
])
def test_ann_recall_against_exact(spec, params, shards, bound):
    items, queries = _clustered()
    exact = Retriever(items, index="Flat").recommend(queries, 20)[0]
    r = Retriever(items, index=spec, faiss_params=params, shards=shards)
    got = r.recommend(queries, 20)[0]
    recall = np.mean([len(set(a) & set(b)) / 20 for a, b in zip(got, exact)])
    assert recall >= bound, f"{spec}: recall@20 against exact {recall:.3f} < {bound}"
    if spec == "IVF32,PQ8":  # 8 bytes of code (+ 8 of id) per item against 128 bytes of float32
        assert index_nbytes(r.index) < index_nbytes(Retriever(items, index="Flat").index) / 4


def test_faiss_errors_are_clear():
    items, _ = _clustered(n_items=200, d=32)
    with pytest.raises(ValueError, match=r"faiss cannot build index 'Bogus12'.*such as Flat, HNSW32"):
        build_faiss_index(items, "Bogus12")
    with pytest.raises(ValueError, match=r"needs at least nlist=256 training items .* got 200 items"):
        build_faiss_index(items, "IVF256,Flat")
    with pytest.raises(ValueError, match=r"needs at least 256 training items, got 200"):
        build_faiss_index(items, "IVF4,PQ8")
    with pytest.raises(ValueError, match=r"needs at least nlist=64 .* got 50 items in the smallest of 4 shards"):
        build_faiss_index(items, "Shards4,IVF64,Flat")
    with pytest.raises(ValueError, match=r"PQ5 needs the embedding size d=32 to be a multiple"):
        build_faiss_index(items, "HNSW32_PQ5")
    with pytest.raises(ValueError, match=r"parameters 'nprob=4' do not apply to index 'IVF4,Flat'"):
        build_faiss_index(items, "IVF4,Flat", "nprob=4")
    with pytest.raises(ValueError, match="positive int"):
        build_faiss_index(items, "Shards0,Flat")
    with pytest.raises(ValueError, match="asks for 4 shards but shards=2"):
        build_faiss_index(items, "Shards4,Flat", shards=2)
    with pytest.raises(ValueError, match="cannot cut 200 items into 300 shards"):
        build_faiss_index(items, "Flat", shards=300)
    with pytest.raises(ValueError, match="positive int"):
        FullRankEvaluator([5], ["recall"], backend="faiss", faiss_shards=0)


def test_recommender_with_sharded_and_ann_index(tmp_path):
    config = Config("BPRMF", "planted-kg", config_dict={
        "planted_kg": {"n_users": 30, "n_items": 300, "n_clusters": 4, "n_noise_entities": 10, "seed": 5},
        "embedding_size": 8, "show_progress": False, "log_level": "WARNING"})
    torch.manual_seed(0)
    data = load_data(config)
    model = get_model("BPRMF")(config, data).eval()
    users = np.arange(data.n_users)
    want = Recommender(model, data, backend="exact").recommend(users, 10, ids="internal")
    for kw in ({"index": "Shards3,Flat"}, {"index": "Flat", "shards": 2}):
        got = Recommender(model, data, **kw).recommend(users, 10, ids="internal")
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
    path = export_index(model, data, tmp_path / "items.npz", index="IVF4,Flat", faiss_params="nprobe=4", shards=2)
    got = Recommender(model, data, index_path=path).recommend(users, 10, ids="internal")
    np.testing.assert_array_equal(got[0], want[0])            # nprobe = nlist: every list searched, exact


def test_config_keys_reach_the_evaluator():
    from recsys.task import build_evaluator
    config = Config("BPRMF", "planted-kg", config_dict={"eval_backend": "faiss", "faiss_index": "IVF4,Flat",
                                                       "faiss_shards": 2, "faiss_params": "nprobe=3"})
    ev = build_evaluator(config)
    assert (ev.backend, ev.faiss_index, ev.faiss_shards, ev.faiss_params) == ("faiss", "IVF4,Flat", 2, "nprobe=3")
    default = build_evaluator(Config("BPRMF", "planted-kg"))
    assert (default.faiss_shards, default.faiss_params) == (1, None)
