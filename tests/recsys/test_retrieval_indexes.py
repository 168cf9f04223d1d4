"""Retriever construction and saving (index settings kept, an exact retriever saved as the faiss index it names,
a pre-built index saved as it is), reconstructing stored vectors (IVF without a direct map, an empty
IndexShards) and the faiss error text. (Written against mutants of recsys/evaluation/{retrieval,indexes}.py that
survived the sixth mutation run, docs/testing.md.)"""
import faiss
import numpy as np
import pytest
import torch

from recsys.evaluation import Retriever, build_faiss_index
from recsys.evaluation.indexes import _faiss_message, reconstruct_all


def _emb(n=64, d=8, seed=0):
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.standard_normal((n, d)).astype(np.float32))


def test_from_embeddings_keeps_every_setting():
    users, items = _emb(5), _emb(64, seed=1)
    r = Retriever.from_embeddings(users, items, backend="faiss", index="IVF4,Flat", faiss_params="nprobe=3", shards=2)
    assert (r.backend, r.index_name, r.faiss_params, r.shards) == ("faiss", "IVF4,Flat", "nprobe=3", 2)
    assert r.index.count() == 2 and faiss.extract_index_ivf(r.index.at(1)).nprobe == 3
    exact = Retriever.from_embeddings(users, items, backend="exact")
    assert exact.backend == "exact" and exact.index is None


def test_an_exact_retriever_saves_the_index_it_names(tmp_path):
    users, items = _emb(5), _emb(64, seed=1)
    r = Retriever.from_embeddings(users, items, backend="exact", index="IVF4,Flat", faiss_params="nprobe=4", shards=2)
    loaded = Retriever.load(r.save(tmp_path / "items.npz"), user_emb=users)
    assert loaded.index.count() == 2                       # nprobe 4 of 4 lists: exact, as the exact backend
    assert [faiss.extract_index_ivf(loaded.index.at(s)).nprobe for s in range(2)] == [4, 4]
    np.testing.assert_allclose(loaded.item_emb.numpy(), items.numpy(), rtol=0, atol=1e-6)
    np.testing.assert_array_equal(loaded.recommend(np.arange(5), 7)[0], r.recommend(np.arange(5), 7)[0])


def test_a_prebuilt_index_is_saved_as_it_is(tmp_path):
    items = _emb(64, seed=2)
    hnsw = build_faiss_index(items, "HNSW8")
    r = Retriever(items, faiss_index=hnsw)                 # index_name stays "Flat": it must not be rebuilt
    loaded = Retriever.load(r.save(tmp_path / "items.faiss"))
    assert type(loaded.index).__name__ == "IndexHNSWFlat"


def test_load_of_a_missing_file_says_how_to_write_one(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"missing\.faiss not found; write one with Retriever\.save\(path\)"):
        Retriever.load(tmp_path / "missing.faiss")


def test_reconstruct_all_of_an_ivf_index_and_of_an_empty_shard_list():
    items = _emb(64, seed=3)
    ivf = build_faiss_index(items, "IVF4,Flat")              # no direct map yet: reconstruct_n raises first
    np.testing.assert_allclose(reconstruct_all(ivf), items.numpy(), rtol=0, atol=1e-6)
    empty = reconstruct_all(faiss.IndexShards(8, False, True))
    assert empty.shape == (0, 8) and empty.dtype == np.float32


def test_faiss_message_keeps_the_last_line_without_the_source_location():
    err = RuntimeError("Error in virtual void faiss::IndexIVF::train(idx_t, const float*) at "
                       "/project/faiss/faiss/IndexIVF.cpp:1185: Error: 'n >= nlist' failed")
    assert _faiss_message(err) == "Error: 'n >= nlist' failed"
    assert _faiss_message(RuntimeError("first line\n  second line  \n")) == "  second line"
    assert _faiss_message(RuntimeError("an error in faiss at x.cpp:3: kept")) == "an error in faiss at x.cpp:3: kept"
    assert _faiss_message(RuntimeError("")) == "RuntimeError('')"
    assert _faiss_message(RuntimeError("  \n ")) == "RuntimeError('  \\n ')"


def test_check_trainable_bounds_and_its_suggestions():
    from recsys.evaluation.indexes import check_trainable
    check_trainable("IVF4,Flat", 4, 8)                       # one training item per list is enough
    check_trainable("PQ1", 256, 8)                           # one sub-quantizer divides every d
    with pytest.raises(ValueError, match=r"nlist=64 training items \(one per IVF list\), got 20 items; use IVF<n> "
                                         r"with n <= 1 \(faiss"):
        check_trainable("IVF64,Flat", 20, 8)
    with pytest.raises(ValueError, match=r"got 78 items; use IVF<n> with n <= 2 \(faiss"):
        check_trainable("IVF100,Flat", 78, 8)
    with pytest.raises(ValueError, match=r"d=64 to be a multiple of the number of sub-quantizers 5; use one of "
                                         r"\[4, 8, 16, 32, 64\]$"):
        check_trainable("PQ5", 300, 64)
    with pytest.raises(ValueError, match=r"at least 256 training items, got 100; use fewer bits \(PQ8x6\), a Flat"):
        check_trainable("PQ8", 100, 64)


def test_faiss_candidates_search_k_plus_the_most_excluded():
    import scipy.sparse as sp

    from recsys.evaluation.evaluator import faiss_candidates
    asked = []

    class Index:                                             # records how many candidates are asked for
        def search(self, x, n):
            asked.append(n)
            return None, np.tile(np.arange(n), (len(x), 1))
    excl = sp.csr_matrix(np.array([[1, 1, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0]], dtype=np.float32))
    ids, valid = faiss_candidates(Index(), np.zeros((2, 3), np.float32), excl, 3, 6)
    assert asked == [3 + 2]
    assert valid.tolist() == [[False, False, True, True, True], [False, True, True, True, True]]
    faiss_candidates(Index(), np.zeros((2, 3), np.float32), sp.csr_matrix((2, 6), dtype=np.float32), 3, 6)
    assert asked[-1] == 3                                    # nothing excluded: no extra candidate
    faiss_candidates(Index(), np.zeros((0, 3), np.float32), sp.csr_matrix((0, 6), dtype=np.float32), 3, 6)
    assert asked[-1] == 3                                    # no queries at all


def test_retriever_without_item_embeddings_and_its_messages():
    items = _emb(64, seed=4)
    index = build_faiss_index(items, "Flat")
    r = Retriever(None, faiss_index=index)                   # from a built index only (faiss backend)
    assert r.item_emb is None and r.n_items == 64
    with pytest.raises(ValueError, match=r"^Retriever needs item_emb or a built faiss index$"):
        Retriever(None)
    with pytest.raises(ValueError, match=r"^the exact backend needs item_emb$"):
        Retriever(None, backend="exact", faiss_index=index)
    assert Retriever(items, index="Flat", shards=2).index.count() == 2
    with pytest.raises(ValueError, match=r"^recommend\(user_ids\) needs user_emb; build with "
                                         r"Retriever\.from_embeddings or pass query vectors of shape \(Q, d\)$"):
        Retriever(items).recommend(np.array([1, 2]), 3)


def test_recommend_takes_id_lists_small_int_ids_and_vectors_that_require_grad():
    users, items = _emb(6, seed=5), _emb(64, seed=6)
    r = Retriever.from_embeddings(users, items)
    want = r.recommend(np.array([3, 1]), 5)
    for ids in ([3, 1], np.array([3, 1], dtype=np.uint8), torch.tensor([3, 1])):
        got = r.recommend(ids, 5)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
    q = users[[3, 1]].clone().requires_grad_(True)
    np.testing.assert_array_equal(r.recommend(q, 5)[0], want[0])
    np.testing.assert_array_equal(r.recommend(q.tolist(), 5)[0], want[0])


def test_pq_bounds_messages_and_polysemous_training_off():
    from recsys.evaluation.indexes import check_trainable
    check_trainable("PQ8", 256, 64)                          # 2**8 items: exactly enough
    with pytest.raises(ValueError, match=r"^faiss index 'PQ8': PQ with 8-bit codes trains 256 centroids per "
                                         r"sub-quantizer and needs at least 256 training items, got 2; use fewer "
                                         r"bits \(PQ8x1\), a Flat / HNSW index, or fewer shards$"):
        check_trainable("PQ8", 2, 64)
    items = _emb(200, d=32, seed=7)
    with pytest.raises(ValueError, match=r"^faiss index 'IVF256,Flat' needs at least nlist=256 training items \(one "
                                         r"per IVF list\), got 200 items; use IVF<n> with n <= 5 "):
        build_faiss_index(items, "IVF256,Flat")
    with pytest.raises(ValueError, match=r"^faiss cannot build index 'Bogus12': could not parse index string Bogus12; "
                                         r"use a factory string such as Flat, HNSW32"):
        build_faiss_index(items, "Bogus12")
    # polysemous training (slow, unused by inner-product search) is off, also for an IVF-PQ behind a transform
    for spec in ("IVF4,PQ4", "PCAR16,IVF4,PQ4"):
        index = build_faiss_index(_emb(300, d=16, seed=8), spec)
        assert faiss.downcast_index(faiss.extract_index_ivf(index)).do_polysemous_training is False, spec


def test_build_defaults_to_an_inner_product_flat_index_and_names_bad_input():
    items = _emb(40, d=8, seed=9)
    index = build_faiss_index(items)
    assert isinstance(index, faiss.IndexFlat) and index.metric_type == faiss.METRIC_INNER_PRODUCT
    assert index.ntotal == 40
    for bad in (items[0], items[:0]):
        with pytest.raises(ValueError, match=r"^item_emb must be a non-empty \(n_items, d\) matrix, got shape"):
            build_faiss_index(bad)
    with pytest.raises(ValueError, match=r"^faiss parameters 'nprob=4' do not apply to index 'IVF4,Flat': "
                                         r"ParameterSpace::set_index_parameter:could not set parameter nprob "
                                         r"\(e\.g\. nprobe=16 for IVF, efSearch=128 for HNSW\)$"):
        build_faiss_index(items, "IVF4,Flat", "nprob=4")


def test_np32_split_shards_and_shard_count_bounds():
    from recsys.evaluation.indexes import _np32, split_shards
    assert _np32(np.ones((2, 3))).dtype == np.float32
    assert _np32(torch.ones(2, 3, dtype=torch.float64)).dtype == np.float32
    for bad in (5, "  "):
        with pytest.raises(ValueError, match="faiss index must be a factory string"):
            split_shards(bad)
    for bad in (True, 2.5, 0):
        with pytest.raises(ValueError, match="the number of faiss shards must be a positive int"):
            split_shards("Flat", bad)
    items = _emb(10, d=32, seed=10)
    assert build_faiss_index(items[:1]).ntotal == 1                       # a one-item catalogue
    assert build_faiss_index(items, "Flat", shards=10).count() == 10     # one item per shard
    with pytest.raises(ValueError, match="cannot cut 10 items into 20 shards"):
        build_faiss_index(items, "Flat", shards=20)
    assert build_faiss_index(_emb(40, d=8, seed=11), "Flat", shards=10).count() == 10   # more shards than d
